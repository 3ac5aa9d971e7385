"""decoding.py: every container of a music library decodes to the samples of its WAV original,
streams in bounded memory, and names what it lacks."""

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import decoding as D
import features as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_library import FORMATS, LOSSLESS, make_library, signal, write_with_pyav  # noqa: E402

SR = F.SAMPLE_RATE
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("library"), seconds=2.0)


def aligned(y, ref, max_lag):
    """(lag, correlation) of ``y`` against ``ref`` at the lag in [-max_lag, max_lag] that fits best
    (the lag is in samples of ``y``: positive means ``y`` starts later)."""
    n = min(len(y), len(ref)) - max_lag
    scores = [np.dot(y[max_lag + lag:max_lag + lag + n // 2], ref[max_lag:max_lag + n // 2])
              for lag in range(-max_lag, max_lag + 1)]
    lag = int(np.argmax(scores)) - max_lag
    a, b = (y[lag:], ref) if lag >= 0 else (y, ref[-lag:])
    m = min(len(a), len(b))
    return lag, float(np.corrcoef(a[:m], b[:m])[0, 1])


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_decodes_to_the_wav_samples(library, name):
    ref = D.decode_audio(library["wav"], SR)
    y = D.decode_audio(library[name], SR)
    assert y.dtype == np.float32 and y.ndim == 1 and np.abs(y).max() <= 1.0
    if name in LOSSLESS:  # the same 16-bit samples, decoded by either library
        np.testing.assert_array_equal(y, ref)
        return
    # WMA's encoder delay (1024 samples at 44.1 kHz) is not signalled in ASF: the only codec here
    # whose samples start late. AAC pads its last frame (up to 1024 samples at 44.1 kHz).
    lag, corr = aligned(y, ref, max_lag=600)
    assert abs(lag) <= (520 if name == "wma" else 2), (name, lag)
    assert corr > (0.98 if name == "wma" else 0.995), (name, corr)  # wmav2 at 128 kb/s: 0.983
    assert abs(len(y) - len(ref)) <= 0.05 * SR, (name, len(y), len(ref))
    np.testing.assert_array_equal(F.load_audio(library[name]), y)  # features delegates here


def test_each_file_goes_to_the_faster_decoder_and_both_agree(library):
    for name, path in library.items():
        chosen = D.decoder_for(str(path), path.read_bytes()[:16])
        assert chosen == ("soundfile" if path.suffix in D.SOUNDFILE_EXTENSIONS else "av"), name
    for name in ("wav", "flac", "vorbis"):  # FFmpeg decodes libsndfile's formats to the same sound
        a = D.decode_audio(library[name], SR, decoder="soundfile")
        b = D.decode_audio(library[name], SR, decoder="av")
        assert len(a) == len(b) and np.abs(a - b).max() < (1e-6 if name in LOSSLESS else 1e-2), name


def test_blocks_join_to_the_whole_and_to_one_shot_soxr(library):
    import librosa

    blocks = list(D.iter_audio(library["flac"], SR))
    assert len(blocks) > 1 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    whole = D.decode_audio(library["flac"], SR)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    # the stream resamples exactly as load_audio did before it streamed (one-shot soxr_hq)
    data, rate = sf.read(library["flac"], dtype="float32", always_2d=True)
    before = librosa.resample(data.mean(axis=1, dtype=np.float32), orig_sr=rate, target_sr=SR, res_type="soxr_hq")
    np.testing.assert_array_equal(whole, np.clip(before, -1, 1))


def test_bytes_and_file_objects_decode_like_the_path(library):
    for name in ("aac", "mp3", "flac"):
        path = library[name]
        want = D.decode_audio(path, SR)
        np.testing.assert_array_equal(D.decode_audio(path.read_bytes(), SR, name=path.name), want)
        with open(path, "rb") as fh:
            np.testing.assert_array_equal(D.decode_audio(fh, SR), want)
    with pytest.raises(D.AudioError, match=r"^<bytes>: not an audio file \(unrecognised content"):
        D.decode_audio(b"not audio at all" * 10, SR)


def test_one_list_of_extensions():
    exts = D.AUDIO_EXTENSIONS
    assert len(set(exts)) == len(exts) and all(e.startswith(".") and e == e.lower() for e in exts)
    for ext in (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".snd", ".aiff", ".aif", ".m4a", ".mp4",
                ".m4b", ".aac", ".alac", ".wma", ".webm", ".mka"):
        assert ext in exts
    assert D.is_audio_file("a/Song.M4A") and not D.is_audio_file("a/.hidden.mp3") and not D.is_audio_file("c.jpg")


def test_missing_av_is_named(library, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(D.MissingDecoderError) as err:
        D.decode_audio(library["aac"], SR)
    msg = str(err.value)
    assert msg.startswith(f"{library['aac']}: decoding .m4a needs the `av` package") and "pip install av" in msg
    assert isinstance(err.value, D.AudioError) and isinstance(err.value, ImportError) and "\n" not in msg
    assert len(D.decode_audio(library["flac"], SR)) > 0  # soundfile's formats need no av


def test_containers_without_sound_are_named(tmp_path, library):
    import av

    video = tmp_path / "silent_film.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            picture = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            picture.pts = i
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    with pytest.raises(D.AudioError, match=r"silent_film.mp4: no audio stream in the file \(1 video\)"):
        D.decode_audio(video, SR)
    heic = tmp_path / "photo.m4a"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(200))
    with pytest.raises(D.AudioError, match=r"photo.m4a: not an audio file \(ISO media image"):
        D.decode_audio(heic, SR)
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(library["aac"].read_bytes()[:3000])
    with pytest.raises(D.AudioError) as err:
        D.decode_audio(cut, SR)
    assert str(err.value).startswith(f"{cut}: cannot decode audio") and "\n" not in str(err.value)


def test_wav_holding_a_codec_libsndfile_lacks_falls_back_to_pyav(tmp_path, library):
    path = tmp_path / "wma_in.wav"
    write_with_pyav(path, signal(2.0), 44100, "wmav2", "wav")
    with pytest.raises(Exception):
        sf.info(path)  # libsndfile refuses this WAV
    lag, corr = aligned(D.decode_audio(path, SR), D.decode_audio(library["wav"], SR), max_lag=600)
    assert corr > 0.98


def test_length_limit(library):
    for name in ("flac", "aac"):
        with pytest.raises(D.AudioError, match=r"h limit"):
            D.decode_audio(library[name], SR, max_seconds=1.0)
    assert len(D.decode_audio(library["aac"], SR, max_seconds=None)) > SR


def test_every_format_keeps_its_genre_by_features(tmp_path):
    """Synthetic genres in every container: each decoded file's 59 features are nearest to its own
    genre's original among the five genres' originals (features scaled by their spread across the
    genres): a nearest-neighbour classifier gives every format the WAV's genre."""
    import soxr
    from workbench import synth

    clips = {g: synth.generate_clip(g, np.random.default_rng(1), duration=3.0) for g in synth.GENRE_GENERATORS}
    originals = {g: F.extract_features(y) for g, y in clips.items()}
    scale = np.std(np.stack(list(originals.values())), axis=0) + 1e-9

    def nearest(vector):
        return min(originals, key=lambda g: np.linalg.norm((vector - originals[g]) / scale))

    def pcm_of(clip):
        def pcm(seconds, sr):
            y = soxr.resample(clip, SR, sr) if sr != SR else clip
            return np.round(np.clip(np.stack([y, y], axis=1), -1, 1) * 32767).astype(np.int16)
        return pcm

    for genre in ("rock", "classical"):
        lib = make_library(tmp_path / genre, seconds=3.0, pcm=pcm_of(clips[genre]))
        got = {name: nearest(F.extract_features(D.decode_audio(path, SR))) for name, path in lib.items()}
        assert set(got.values()) == {genre}, got


@pytest.fixture(scope="module")
def wide_file(tmp_path_factory):
    """20 s of 8 channels at 192 kHz (16-bit WAV, 61 MB): 123 MB as float32 if read whole."""
    path = tmp_path_factory.mktemp("wide") / "wide.wav"
    rate, seconds, step = 192000, 20, 192000
    t = np.arange(step) / rate
    with sf.SoundFile(path, "w", samplerate=rate, channels=8, subtype="PCM_16") as fh:
        for _ in range(seconds):
            fh.write(np.stack([0.1 * np.sin(2 * np.pi * 110 * (c + 1) * t) for c in range(8)], axis=1))
    return path, seconds


@pytest.mark.parametrize("decoder", ["soundfile", "av"])
def test_memory_is_bounded_by_the_output_not_the_file(wide_file, decoder):
    path, seconds = wide_file
    whole_file = seconds * 192000 * 8 * 4
    tracemalloc.start()
    try:
        n = sum(len(block) for block in D.iter_audio(path, SR, decoder=decoder))
        _, stream_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        y = D.decode_audio(path, SR, decoder=decoder)
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len(y) == seconds * SR
    assert stream_peak < 8e6, f"{decoder}: streaming peak {stream_peak / 1e6:.1f} MB (file as float32: {whole_file / 1e6:.0f} MB)"
    assert whole_peak < y.nbytes + 8e6, f"{decoder}: peak {whole_peak / 1e6:.1f} MB for a {y.nbytes / 1e6:.1f} MB result"


@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data")
def test_real_files_decode_as_before_and_as_m4a(tmp_path):
    """Shared GTZAN and emotify files: the streaming decoder gives load_audio's former samples bit
    for bit (soundfile read whole, channel mean, one-shot soxr_hq), and an AAC transcode of a
    GTZAN clip the same sound."""
    import librosa

    paths = sorted((DATA / "gtzan-mini-dev").rglob("*.wav"))[:1] + sorted((DATA / "emotify-dev").rglob("*.mp3"))[:1]
    if len(paths) < 2:
        pytest.skip("shared data incomplete")
    for path in paths:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        before = np.clip(librosa.resample(mono, orig_sr=rate, target_sr=SR, res_type="soxr_hq"), -1, 1)
        np.testing.assert_array_equal(F.load_audio(path), before)
    pcm, rate = sf.read(paths[0], dtype="int16", always_2d=True)
    m4a = tmp_path / "clip.m4a"
    write_with_pyav(m4a, pcm[:10 * rate], rate, "aac", "ipod")
    ref = D.decode_audio(paths[0], SR)[:10 * SR]
    lag, corr = aligned(D.decode_audio(m4a, SR), ref, max_lag=50)
    assert lag == 0 and corr > 0.99
