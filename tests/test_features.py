"""features.py: the fast extractor against plain per-call librosa, known answers, loading,
windows, batches and the cache."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workbench import batch as B
import features as F
from workbench import synth

SR = F.SAMPLE_RATE
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
GTZAN = DATA / "gtzan-mini-dev"
QUICK = os.environ.get("QUICK") == "1"


def tone(freq, seconds=2.0, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def click_track(bpm, seconds=8.0, sr=SR):
    """Broadband clicks (20-ms decaying noise bursts): beat_track aggregates onsets with a median
    over mel bands, so a narrow-band beep would read as no onsets at all."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    n = int(0.02 * sr)
    click = (0.9 * np.random.default_rng(0).uniform(-1, 1, n) * np.exp(-np.arange(n) / (0.004 * sr)))
    click = click.astype(np.float32)
    for t in np.arange(0.1, seconds - 0.1, 60.0 / bpm):
        i = int(t * sr)
        y[i:i + len(click)] += click
    return y


def varied_clips():
    """Synthetic genres, tones, noise, a chirp, harmonic/noise mixes: (name, y, sr)."""
    rng = np.random.default_rng(0)
    clips = [(g, synth.generate_clip(g, np.random.default_rng(10 + i), duration=3.0), SR)
             for i, g in enumerate(synth.GENRE_GENERATORS)]
    t = np.arange(int(2.0 * SR)) / SR
    clips += [
        ("tone_440", tone(440), SR),
        ("tone_3k_quiet", tone(3000, amp=0.01), SR),
        ("noise", (0.2 * rng.standard_normal(2 * SR)).astype(np.float32), SR),
        ("chirp", (0.5 * np.sin(2 * np.pi * (100 * t + 2000 * t**2))).astype(np.float32), SR),
        ("clicks", click_track(100, 4.0), SR),
        ("short_0.7s", synth.generate_clip("pop", np.random.default_rng(3), duration=0.7), SR),
        ("sr16k_jazz", synth.generate_clip("jazz", np.random.default_rng(4), sr=16000, duration=2.0), 16000),
        ("tone_plus_noise", tone(220) + (0.05 * rng.standard_normal(2 * SR)).astype(np.float32), SR),
    ]
    return clips


def assert_matches_reference(fast, ref, name):
    """58 exact features to 1e-4 relative; values near zero within 1e-4 of their group's scale."""
    for group, idx in F.FEATURE_GROUPS.items():
        if group == "harmonic_ratio":
            continue
        a, b = fast[idx], ref[idx]
        atol = 1e-5 * max(float(np.abs(b).max()), 1e-6)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol, err_msg=f"{name}: {group}")


# ---------------------------------------------------------------------------------- constants


def test_feature_names_and_groups():
    names = F.FEATURE_NAMES
    assert len(names) == F.N_FEATURES == 59 and len(set(names)) == 59
    assert names[0] == "mfcc_mean_1" and names[19] == "mfcc_mean_20"
    assert names[20] == "mfcc_std_1" and names[40] == "chroma_mean_C" and names[51] == "chroma_mean_B"
    assert names[52:] == ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff",
                          "zero_crossing_rate", "rms", "tempo", "harmonic_ratio")
    covered = sorted(i for idx in F.FEATURE_GROUPS.values() for i in idx)
    assert covered == list(range(59))
    assert list(F.FEATURE_GROUPS) == ["mfcc_mean", "mfcc_std", "chroma", "spectral", "zcr", "rms",
                                      "tempo", "harmonic_ratio"]


def test_imports_with_numpy_only():
    """The Hub copy of features.py must import without librosa/soundfile/scipy/tqdm."""
    code = (
        "import sys\n"
        "for m in ('librosa', 'soundfile', 'scipy', 'tqdm'): sys.modules[m] = None\n"
        "import features, numpy as np\n"
        "assert len(features.FEATURE_NAMES) == 59 and features.SAMPLE_RATE == 22050\n"
        "try:\n"
        "    features.extract_features(np.zeros(22050, np.float32))\n"
        "except ImportError as e:\n"
        "    assert 'librosa' in str(e), e\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ------------------------------------------------------------------------- against librosa


@pytest.mark.parametrize("shape, size", [((431, 417), 31), ((417, 431), 11), ((5, 3), 31), ((1, 4), 3), ((40, 2), 7)])
def test_median_columns_equals_scipy(shape, size):
    """The sliding sorted-window median is scipy's, ties and windows longer than the column included."""
    import scipy.ndimage

    rng = np.random.default_rng(size)
    for x in (rng.random(shape, dtype=np.float32), np.round(4 * rng.random(shape)).astype(np.float32)):
        expected = scipy.ndimage.median_filter(x, size=(size, 1), mode="reflect")
        np.testing.assert_array_equal(F._median_columns(x, size), expected)


@pytest.mark.parametrize("genre", ["jazz", "rock", "classical"])
def test_spectral_pass_is_librosa(genre):
    """One pass over the frames: the power spectrogram and the tuning bit for bit, mel power and
    the spectral shape to rounding, the pooled power exactly as the harmonic ratio sums it."""
    import librosa

    y = synth.generate_clip(genre, np.random.default_rng(3), duration=3.0)
    got = F._spectral_pass(y, SR, F.N_FFT, F.HOP_LENGTH)
    mag = np.abs(librosa.stft(y))                      # (n_bins, n_frames)
    power = (mag * mag).T
    power[power < np.finfo(np.float32).tiny] = 0.0     # the pass flushes float32 denormals
    np.testing.assert_array_equal(got.spec, power)
    assert got.tuning == librosa.estimate_tuning(S=mag**2, sr=SR, n_fft=F.N_FFT, bins_per_octave=12)
    np.testing.assert_allclose(got.mel, power @ librosa.filters.mel(sr=SR, n_fft=F.N_FFT).T, rtol=1e-5,
                               atol=1e-6 * got.mel.max())
    expected = [librosa.feature.spectral_centroid(S=mag, sr=SR).mean(),
                librosa.feature.spectral_bandwidth(S=mag, sr=SR).mean(),
                librosa.feature.spectral_rolloff(S=mag, sr=SR).mean()]
    np.testing.assert_allclose(got.shape, expected, rtol=1e-7)
    n_full = len(power) // F.HR_TIME_POOL * F.HR_TIME_POOL
    pooled = sum(power[k:n_full:F.HR_TIME_POOL] for k in range(F.HR_TIME_POOL))
    np.testing.assert_array_equal(got.pooled[:len(pooled)], pooled)


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """A read-only install with a read-only home still computes features (numba compiles per process)."""
    import numba

    def no_locator(self):
        raise RuntimeError("cannot cache function: no locator available for file")

    monkeypatch.setattr(numba.core.dispatcher.Dispatcher, "enable_caching", no_locator)
    kernel = F._jit(F._finite_peak_kernel.py_func)
    assert kernel(np.array([0.25, -0.5], np.float32)) == (True, 0.5)


def test_finite_peak():
    assert F._finite_peak(np.array([0.1, -0.5], np.float32)) == (True, 0.5)
    assert F._finite_peak(np.array([0.1, np.nan], np.float32))[0] is False
    assert F._finite_peak(np.array([-np.inf], np.float32))[0] is False
    assert F._finite_peak(np.zeros(3)) == (True, 0.0)


def test_matches_plain_librosa_on_varied_clips():
    for name, y, sr in varied_clips():
        fast = F.extract_features(y, sr)
        ref = F.reference_features(y, sr)
        assert fast.shape == (59,) and fast.dtype == np.float32 and np.isfinite(fast).all()
        assert_matches_reference(fast, ref, name)
        assert fast[57] == pytest.approx(ref[57], rel=1e-6), f"{name}: tempo"


def test_matches_plain_librosa_on_real_audio():
    files = sorted(GTZAN.glob("*/*.00000.wav")) if GTZAN.is_dir() else []
    if not files:
        pytest.skip("no GTZAN clips in ../shared/data")
    for path in files[: 3 if QUICK else 10]:
        y = F.load_audio(path)[5 * SR:12 * SR]
        assert_matches_reference(F.extract_features(y), F.reference_features(y), path.name)


def _hr_clips():
    """40+ clips with a wide spread of harmonic/percussive balance."""
    rng = np.random.default_rng(1)
    clips = [synth.generate_clip(g, np.random.default_rng(100 + i), duration=2.0)
             for i in range(6) for g in synth.GENRE_GENERATORS]
    for i in range(12):
        mix = tone(rng.uniform(100, 1000), 2.0) + click_track(rng.uniform(70, 180), 2.0) * rng.uniform(0, 1)
        mix += (rng.uniform(0, 0.3) * rng.standard_normal(len(mix))).astype(np.float32)
        clips.append((mix / np.abs(mix).max() * 0.8).astype(np.float32))
    return clips


def test_harmonic_ratio_correlates_with_hpss_reference():
    import librosa

    fast, ref = [], []
    for y in _hr_clips():
        fast.append(F.extract_features(y)[58])
        y_h, _ = librosa.effects.hpss(y)
        ref.append(np.sum(y_h.astype(np.float64) ** 2) / np.sum(y.astype(np.float64) ** 2))
    fast, ref = np.array(fast), np.array(ref)
    assert len(fast) >= 40
    assert np.all((fast >= 0) & (fast <= 1))
    assert np.corrcoef(fast, ref)[0, 1] >= 0.98
    assert np.abs(fast - ref).mean() < 0.05


@pytest.mark.slow
def test_harmonic_ratio_correlates_on_real_audio():
    files = sorted(GTZAN.glob("*/*.wav")) if GTZAN.is_dir() else []
    if len(files) < 40:
        pytest.skip("needs the 50 GTZAN mini-dev clips")
    fast, ref = [], []
    for path in files[: 40 if QUICK else len(files)]:
        y = F.load_audio(path)[10 * SR:15 * SR]
        fast.append(F.extract_features(y)[58])
        ref.append(F.reference_features(y)[58])
    assert np.corrcoef(fast, ref)[0, 1] >= 0.98


# ---------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_pure_tone_centroid_is_its_frequency(freq):
    feats = F.extract_features(tone(freq))
    assert feats[52] == pytest.approx(freq, rel=0.02)
    assert feats[58] > 0.95  # a steady tone is harmonic
    pitch_class = int(round(12 * np.log2(freq / 440.0))) % 12  # semitones above A
    assert np.argmax(feats[40:52]) == (9 + pitch_class) % 12  # chroma index: C=0 ... A=9


def test_click_track_tempo():
    assert F.extract_features(click_track(120))[57] == pytest.approx(120, rel=0.03)


def test_noise_is_not_harmonic():
    noise = (0.3 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    assert F.extract_features(noise)[58] < 0.5


@pytest.mark.parametrize("bad, problem", [
    (np.zeros(SR, np.float32), "silent"),
    (np.full(SR, 1e-6, np.float32), "silent"),
    (np.zeros(0, np.float32), "empty"),
    (tone(440, 0.2), "too short"),
    (np.where(np.arange(SR) == 5, np.nan, 0.1).astype(np.float32), "NaN"),
    (np.ones((2, SR), np.float32) * 0.1, "mono"),
    (np.ones(SR, np.int16), "floating-point"),
])
def test_bad_arrays_raise_audio_error(bad, problem):
    with pytest.raises(F.AudioError, match=problem) as err:
        F.extract_features(bad)
    assert "array" in str(err.value)


# ----------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("fmt, ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3"), ("AU", "au")])
def test_load_audio_formats_channels_rates(tmp_path, fmt, ext):
    stereo = np.stack([tone(440, 1.5, 44100), tone(660, 1.5, 44100)], axis=1)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, stereo, 44100, format=fmt)
    y = F.load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and np.abs(y).max() <= 1.0
    assert abs(len(y) - 1.5 * SR) <= 0.03 * SR  # codecs may pad a few ms
    spec = np.abs(np.fft.rfft(y[SR // 4: SR // 4 + 8192]))
    peaks = sorted(np.argsort(spec)[-2:] * SR / 8192)
    assert peaks[0] == pytest.approx(440, abs=6) and peaks[1] == pytest.approx(660, abs=6)


def test_load_audio_wav_is_exact_at_native_rate(tmp_path):
    y = synth.generate_clip("rock", np.random.default_rng(0), duration=1.0)
    sf.write(tmp_path / "x.wav", y, SR, subtype="FLOAT")
    np.testing.assert_array_equal(F.load_audio(tmp_path / "x.wav"), y)
    other = F.load_audio(tmp_path / "x.wav", sr=16000)
    assert len(other) == 16000


def test_resample_audio():
    y = tone(1000, 1.0, 44100)
    same = F.resample_audio(y, 44100, 44100)
    assert same.dtype == np.float32 and np.array_equal(same, y)
    down = F.resample_audio(y, 44100, SR)
    assert down.dtype == np.float32 and len(down) == SR
    assert np.argmax(np.abs(np.fft.rfft(down))) == pytest.approx(1000, abs=2)  # 1-s clip: 1 Hz bins
    with pytest.raises(ValueError, match="positive"):
        F.resample_audio(y, 0, SR)


def test_load_audio_errors_name_the_file(tmp_path):
    cases = {}
    cases["missing.wav"] = "not found"
    (tmp_path / "junk.wav").write_bytes(b"this is not audio" * 100)
    cases["junk.wav"] = "not an audio file"
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), SR)
    cases["empty.wav"] = "empty"
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    cases["silent.wav"] = "silent"
    sf.write(tmp_path / "short.wav", tone(440, 0.1), SR)
    cases["short.wav"] = "too short"
    for name, problem in cases.items():
        with pytest.raises(F.AudioError, match=problem) as err:
            F.load_audio(tmp_path / name)
        assert name in str(err.value)


# ----------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("seconds, expected", [(3.0, 1), (10.0, 2), (12.0, 2), (13.0, 3), (17.6, 4)])
def test_split_windows_tail_rule(seconds, expected):
    y = np.arange(int(seconds * SR), dtype=np.float32)
    wins = F.split_windows(y, SR, 5.0)
    assert len(wins) == expected
    if seconds > 5:
        assert all(len(w) == 5 * SR for w in wins)
        assert all(np.shares_memory(w, y) for w in wins)  # views, no copies
        if expected > int(seconds // 5):  # tail kept: last window ends where the song ends
            assert wins[-1][-1] == y[-1]
    else:  # shorter than a window: repeated to fill exactly one (features.split_windows)
        assert len(wins[0]) == 5 * SR and np.array_equal(wins[0][:len(y)], y)


def test_extract_windows_matches_per_window_features_and_skips_silence():
    song = np.concatenate([np.zeros(2 * SR, np.float32),
                           synth.generate_clip("blues", np.random.default_rng(0), duration=4.0)])
    feats, starts = F.extract_windows(song, SR, clip_seconds=2.0, return_starts=True)
    assert feats.shape == (2, 59) and starts.tolist() == [2 * SR, 4 * SR]  # silent intro skipped
    np.testing.assert_allclose(feats[0], F.extract_features(song[2 * SR:4 * SR]), rtol=1e-6)
    with pytest.raises(F.AudioError, match="silent"):
        F.extract_windows(np.zeros(6 * SR, np.float32), SR, 2.0)


# ----------------------------------------------------------------------------- extract_many


def _write_set(folder):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, g in enumerate(["jazz", "rock", "classical"]):
        p = folder / f"{g}.flac"
        sf.write(p, synth.generate_clip(g, np.random.default_rng(i), duration=2.0), SR)
        paths.append(p)
    (folder / "broken.wav").write_bytes(b"RIFF....garbage")
    return paths


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_extract_many_skips_bad_sources(tmp_path, n_jobs):
    good = _write_set(tmp_path / "audio")
    array = synth.generate_clip("pop", np.random.default_rng(9), duration=2.0)
    sources = [good[0], tmp_path / "audio" / "broken.wav", good[1], tmp_path / "nope.wav", array,
               np.zeros(SR, np.float32), str(good[2])]
    res = B.extract_many(sources, n_jobs=n_jobs, cache_dir=False, progress=False)
    assert res.ok == [0, 2, 4, 6]
    assert [name for name, _ in res.failures] == [str(sources[1]), str(sources[3]), "array[5]"]
    assert "cannot decode" in res.failures[0][1] and "not found" in res.failures[1][1]
    assert "silent" in res.failures[2][1]
    for i, feats in zip(res.ok, res.features):
        y = sources[i] if isinstance(sources[i], np.ndarray) else F.load_audio(sources[i])
        assert feats.shape == (1, 59) and feats.dtype == np.float32
        np.testing.assert_allclose(feats[0], F.extract_features(y), rtol=1e-6, atol=1e-7)


def test_extract_many_windows(tmp_path):
    song = synth.generate_clip("rock", np.random.default_rng(2), duration=4.6)
    res = B.extract_many([song], clip_seconds=2.0, n_jobs=1, cache_dir=False)
    assert res.features[0].shape == (2, 59)  # 2 + 2 s; the 0.6-s tail (< half) is dropped
    np.testing.assert_allclose(res.features[0], F.extract_windows(song, SR, 2.0), rtol=1e-6)


def test_cache_hits_and_invalidation(tmp_path):
    paths = _write_set(tmp_path / "audio")
    cache = tmp_path / "cache"
    first = B.extract_many(paths, n_jobs=2, cache_dir=cache, progress=False)
    assert first.cache_hits == 0 and len(first.ok) == 3 and list(cache.rglob("*.npz"))
    second = B.extract_many(paths, n_jobs=2, cache_dir=cache, progress=False)
    assert second.cache_hits == 3
    for a, b in zip(first.features, second.features):
        np.testing.assert_array_equal(a, b)
    # other settings -> other keys
    assert B.extract_many(paths, clip_seconds=1.0, n_jobs=1, cache_dir=cache).cache_hits == 0
    assert B.extract_many(paths, hop_length=256, n_jobs=1, cache_dir=cache).cache_hits == 0
    # changed content -> miss for that file only
    sf.write(paths[0], tone(330, 2.0), SR)
    third = B.extract_many(paths, n_jobs=1, cache_dir=cache)
    assert third.cache_hits == 2
    np.testing.assert_allclose(third.features[0][0], F.extract_features(F.load_audio(paths[0])), rtol=1e-6)
    # arrays are keyed by their bytes; cache_dir=False writes nothing
    arr = tone(550)
    B.extract_many([arr], n_jobs=1, cache_dir=cache)
    assert B.extract_many([arr.copy()], n_jobs=1, cache_dir=cache).cache_hits == 1
    before = len(list(cache.rglob("*.npz")))
    B.extract_many([tone(560)], n_jobs=1, cache_dir=False)
    assert len(list(cache.rglob("*.npz"))) == before


def test_window_starts_come_back_and_from_the_cache(tmp_path):
    quiet_intro = np.concatenate([np.zeros(2 * SR, np.float32), synth.generate_clip("rock", np.random.default_rng(5),
                                                                                     duration=4.0)])
    for _ in range(2):  # computed, then from the cache
        res = B.extract_many([quiet_intro], clip_seconds=2.0, n_jobs=1, cache_dir=tmp_path)
        assert res.starts[0].tolist() == [2 * SR, 4 * SR]  # the silent first window is skipped
    assert res.cache_hits == 1


def test_frontend_embeddings_join_the_features_and_key_the_cache(tmp_path):
    import torch

    import frontend

    song = synth.generate_clip("jazz", np.random.default_rng(6), duration=6.0)
    plain = B.extract_many([song], clip_seconds=3.0, n_jobs=1, cache_dir=tmp_path)
    net = frontend.load_musicnn()
    res = B.extract_many([song], clip_seconds=3.0, n_jobs=1, cache_dir=tmp_path, frontend=net)
    assert res.cache_hits == 0 and res.features[0].shape == (2, F.N_FEATURES + frontend.EMBEDDING_SIZE)
    np.testing.assert_array_equal(res.features[0][:, :F.N_FEATURES], plain.features[0])
    kept = F.extract_song(song, SR, 3.0)
    windows = frontend.song_windows_16k(song, SR, kept.starts, len(kept.audio[0]))
    # Training inputs are exact: the batch path runs the front end in fp32 unless told otherwise.
    np.testing.assert_allclose(res.features[0][:, F.N_FEATURES:],
                               frontend.window_embeddings(net, windows, frontend.MUSICNN_SAMPLE_RATE,
                                                          precision="fp32"), atol=1e-6)
    assert B.extract_many([song], clip_seconds=3.0, n_jobs=1, cache_dir=tmp_path, frontend=net).cache_hits == 1
    other = B.extract_many([song], clip_seconds=3.0, n_jobs=1, cache_dir=tmp_path, frontend=net,
                           frontend_precision="bf16")
    assert other.cache_hits == 0  # another arithmetic: another cache key
    with torch.no_grad():  # other weights: another cache key
        next(net.parameters()).add_(0.01)
    assert B.extract_many([song], clip_seconds=3.0, n_jobs=1, cache_dir=tmp_path, frontend=net).cache_hits == 0


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSIC_GENRE_MOE_CACHE", str(tmp_path / "c"))
    assert B.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MUSIC_GENRE_MOE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert B.default_cache_dir() == tmp_path / "music-genre-moe" / "features"
