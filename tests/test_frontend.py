"""The musicnn front end against what the original (TensorFlow) computes, and its converter.

Known answers come from ``../shared/reference/musicnn-msd-reference.npz`` (see the README beside
it); those tests skip when ``shared/`` is absent. The conversion test needs the musicnn wheel in
``.cache/wheels/`` (``.venv/bin/pip download -q --no-deps musicnn==0.1.0 -d .cache/wheels``).
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import convert_musicnn
import frontend
from features import resample_audio
from frontend import (EMBEDDING_SIZE, MUSICNN_N_MELS, MUSICNN_SAMPLE_RATE, PATCH_FRAMES, PATCH_SAMPLES,
                      load_musicnn, log_mel, log_mel_patches, window_embedding, window_embeddings)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference" / "musicnn-msd-reference.npz"
DATA = SHARED / "data"
WHEEL = ROOT / ".cache" / "wheels" / convert_musicnn.WHEEL_NAME
#: Where the reference's patch sources live under shared/data.
PATCH_SOURCES = {
    "Kevin_MacLeod_-_Vibe_Ace.ogg": "cc-music/Kevin_MacLeod_-_Vibe_Ace.ogg",
    "metal.00001.wav": "gtzan-mini-dev/metal/metal.00001.wav",
    "classical.00001.wav": "gtzan-mini-dev/classical/classical.00001.wav",
}

needs_reference = pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference answers not found at {REFERENCE}")


@pytest.fixture(scope="module")
def net():
    return load_musicnn()


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE)


@functools.lru_cache(maxsize=None)
def _load_like_musicnn(path: Path) -> np.ndarray:
    """musicnn's extractor loads with ``librosa.load(file, sr=16000)`` (mono, librosa's resampler)."""
    librosa = pytest.importorskip("librosa")
    y, _ = librosa.load(str(path), sr=MUSICNN_SAMPLE_RATE)
    return y


def _run(net, patches: np.ndarray) -> frontend.MusiCNNOutput:
    """The network's outputs on ``patches``, run as window_embeddings runs it."""
    step = frontend.patches_per_pass()
    with torch.inference_mode():
        parts = [net(torch.from_numpy(patches[i:i + step])) for i in range(0, len(patches), step)]
    return frontend.MusiCNNOutput(*(torch.cat(field) for field in zip(*parts)))


# --------------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------------


@needs_reference
def test_patches_from_audio_match_musicnn(ref):
    sources = ref["patch_source"]
    for name, rel in PATCH_SOURCES.items():
        expected = ref["patches"][sources == name]
        got = log_mel_patches(_load_like_musicnn(DATA / rel))
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=name)


@needs_reference
def test_network_matches_musicnn_on_reference_patches(net, ref):
    out = _run(net, ref["patches"])
    # Measured: logits 1.4e-5, taggram 2.6e-6, penultimate 9.7e-6, mean_pool 2.0e-5 (abs).
    # max_pool: 4.0e-4 at a value of 59 (7e-6 relative) and 2.2e-4 at 1.75, a mid-end channel
    # whose batch norm multiplies by 75: float32 rounding amplified, TF's and ours alike (a float64
    # run of this network lands between the two there).
    for key in ("logits", "taggram", "penultimate", "mean_pool"):
        np.testing.assert_allclose(getattr(out, key).numpy(), ref[key], rtol=0, atol=5e-5, err_msg=key)
    np.testing.assert_allclose(out.max_pool.numpy(), ref["max_pool"], rtol=1e-5, atol=5e-4, err_msg="max_pool")
    with torch.inference_mode():  # embed() is the penultimate layer (batch size changes rounding only)
        np.testing.assert_allclose(net.embed(torch.from_numpy(ref["patches"][:2]), "fp32").numpy(),
                                   out.penultimate[:2].numpy(), rtol=0, atol=1e-5)


@needs_reference
def test_whole_file_taggrams_match_musicnn_extractor(net, ref):
    # musicnn's extractor(file, model='MSD_musicnn', input_length=3, input_overlap=False):
    # librosa.load at 16 kHz -> log-mel -> non-overlapping 187-frame patches -> sigmoid(logits).
    for i, rel in enumerate(ref["files"]):
        expected = ref[f"file_taggram_{i}"]
        taggram = _run(net, log_mel_patches(_load_like_musicnn(DATA / str(rel)))).taggram.numpy()
        assert taggram.shape == expected.shape, rel
        # Measured: 2.6e-6 at most; 1e-3 leaves room for other librosa/soxr resampler versions.
        np.testing.assert_allclose(taggram, expected, rtol=0, atol=1e-3, err_msg=str(rel))


# --------------------------------------------------------------------------------------------
# Shapes, padding and errors
# --------------------------------------------------------------------------------------------


def _tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_log_mel_shapes_and_patch_count():
    y = _tone(7.0, MUSICNN_SAMPLE_RATE)
    spec = log_mel(y)
    assert spec.shape == (1 + y.size // 256, MUSICNN_N_MELS) and spec.dtype == np.float32
    patches = log_mel_patches(y)
    assert patches.shape == (spec.shape[0] // PATCH_FRAMES, PATCH_FRAMES, MUSICNN_N_MELS)
    np.testing.assert_array_equal(patches[1], spec[PATCH_FRAMES:2 * PATCH_FRAMES])
    # Loud audio: 10000 * float16 would overflow to inf under NumPy 2 without the float32 cast.
    assert np.isfinite(log_mel(np.clip(y * 100, -1, 1))).all()
    # Bit for bit musicnn's call (librosa.feature.melspectrogram), with the filters built once.
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=MUSICNN_SAMPLE_RATE, n_fft=512, hop_length=256, n_mels=96).T
    np.testing.assert_array_equal(spec, np.log10(10000.0 * mel.astype(np.float16).astype(np.float32) + 1.0))


def test_wrong_sample_rate_is_an_error_naming_it():
    y = _tone(4.0, 22050)
    for fn in (log_mel, log_mel_patches):
        with pytest.raises(ValueError, match="22050"):
            fn(y, sr=22050)


def test_stereo_input_is_an_error_naming_its_shape():
    with pytest.raises(ValueError, match=r"\(2, 48000\)"):
        log_mel_patches(np.zeros((2, 48000), np.float32))


def test_audio_shorter_than_a_patch_is_an_error():
    assert log_mel_patches(np.zeros(PATCH_SAMPLES, np.float32)).shape == (1, PATCH_FRAMES, MUSICNN_N_MELS)
    with pytest.raises(ValueError, match=str(PATCH_SAMPLES - 1)):
        log_mel_patches(np.zeros(PATCH_SAMPLES - 1, np.float32))


def test_network_rejects_wrong_input_shape(net):
    with pytest.raises(ValueError, match=r"\(2, 187, 80\)"):
        net(torch.zeros(2, PATCH_FRAMES, 80))


def test_frozen_network_stays_in_eval_mode(net):
    parent = torch.nn.Sequential(net)
    parent.train()
    assert not any(m.training for m in net.modules())
    net.frozen = False
    try:
        parent.train()
        assert net.training
    finally:
        net.frozen = True
        net.eval()


def test_window_embedding_repeats_a_short_clip(net):
    sr = 22050
    clip = _tone(2.0, sr)
    emb = window_embedding(net, clip, sr, precision="fp32")
    assert emb.shape == (EMBEDDING_SIZE,) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # What it must equal: resample, repeat the clip up to one patch, one patch's penultimate layer.
    y16 = resample_audio(clip, sr, MUSICNN_SAMPLE_RATE)
    padded = np.tile(y16, 2)[:PATCH_SAMPLES]
    with torch.inference_mode():
        expected = net.embed(torch.from_numpy(log_mel_patches(padded)), "fp32")[0].numpy()
    np.testing.assert_allclose(emb, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(0,\)"):
        window_embedding(net, np.zeros(0, np.float32), sr)


def test_batched_window_embeddings_equal_one_at_a_time(net):
    windows = [_tone(2.5, MUSICNN_SAMPLE_RATE, 220.0), _tone(6.5, MUSICNN_SAMPLE_RATE, 880.0)]
    batched = window_embeddings(net, windows, MUSICNN_SAMPLE_RATE, batch_size=2, precision="fp32")
    assert batched.shape == (2, EMBEDDING_SIZE)
    for w, row in zip(windows, batched):
        np.testing.assert_allclose(row, window_embedding(net, w, MUSICNN_SAMPLE_RATE, "fp32"), rtol=0, atol=1e-5)
    # The 6.5-s window has two patches: its embedding is their mean.
    with torch.inference_mode():
        two = net.embed(torch.from_numpy(log_mel_patches(windows[1])), "fp32").numpy()
    assert two.shape[0] == 2
    np.testing.assert_allclose(batched[1], two.mean(0), rtol=0, atol=1e-5)
    assert window_embeddings(net, [], MUSICNN_SAMPLE_RATE).shape == (0, EMBEDDING_SIZE)


# --------------------------------------------------------------------------------------------
# Inference precision
# --------------------------------------------------------------------------------------------

#: Per-patch cosine to fp32 that the low-precision paths must hold (measured on the 40 reference
#: patches: bf16 >= 0.99969, int8 >= 0.99941; benchmarks/bench_precision.py; tested on 20).
MIN_COSINE = 0.999


def _test_patches(ref_path=REFERENCE) -> np.ndarray:
    """The 40 reference patches, or patches of three tones when the reference is absent."""
    if ref_path.is_file():
        return np.ascontiguousarray(np.load(ref_path)["patches"])
    return np.concatenate([log_mel_patches(_tone(6.5, MUSICNN_SAMPLE_RATE, f)) for f in (110.0, 440.0, 1760.0)])


@pytest.fixture(scope="module")
def exact(net):
    """Every other test patch (all three reference sources) and its fp32 embedding."""
    patches = torch.from_numpy(np.ascontiguousarray(_test_patches()[::2]))
    with torch.inference_mode():
        return patches, torch.cat([net.embed(patches[i:i + 2], "fp32") for i in range(0, len(patches), 2)])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_embeddings_agree_with_fp32(net, exact, precision):
    patches, exact = exact
    with torch.inference_mode():
        # Batch size does not change a patch's result beyond rounding (per-patch quantisation).
        fast = torch.cat([net.embed(patches[i:i + 3], precision) for i in range(0, len(patches), 3)])
    cos = torch.nn.functional.cosine_similarity(fast, exact, dim=1)
    assert fast.dtype == torch.float32 and cos.min() >= MIN_COSINE, (precision, float(cos.min()))


def test_fp32_is_bit_identical_to_the_exact_network(net):
    windows = [_tone(2.5, 22050, 220.0), _tone(6.5, 22050, 880.0)]
    # Today's path, written out: every window's patches through forward(), 2 per pass, then means.
    patches = [frontend.window_patches(w, 22050) for w in windows]
    stacked = torch.from_numpy(np.concatenate(patches))
    with torch.inference_mode():
        emb = torch.cat([net(stacked[i:i + 2]).penultimate for i in range(0, len(stacked), 2)])
        assert torch.equal(net.embed(stacked[:2], "fp32"), net(stacked[:2]).penultimate)
    expected = np.stack([emb[:1].mean(0).numpy(), emb[1:].mean(0).numpy()])
    got = window_embeddings(net, windows, 22050, batch_size=2, precision="fp32")
    np.testing.assert_array_equal(got, expected)


def test_auto_precision_follows_the_cpu_flags(net, monkeypatch):
    for flags, expected in ((set(), "fp32"), ({"avx512f"}, "fp32"), ({"avx512_bf16"}, "bf16"),
                            ({"avx512_vnni", "avx512_bf16"}, "int8")):
        monkeypatch.setattr(frontend, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert frontend.resolve_precision("auto") == expected, flags
        assert frontend.resolve_precision("fp32") == "fp32"
    assert frontend.resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="CPU only"):
        frontend.resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="fp16"):
        frontend.resolve_precision("fp16")
    # Without the flags, the default path is the exact one.
    monkeypatch.setattr(frontend, "cpu_flags", lambda: frozenset())
    w = [_tone(3.5, MUSICNN_SAMPLE_RATE)]
    np.testing.assert_array_equal(window_embeddings(net, w, MUSICNN_SAMPLE_RATE),
                                  window_embeddings(net, w, MUSICNN_SAMPLE_RATE, precision="fp32"))


def test_low_precision_needs_no_grad_and_follows_new_weights():
    patches = torch.from_numpy(_test_patches()[:2])
    trainable = load_musicnn()
    trainable.frozen = False
    # Gradients enabled (a training pass, frozen front end or not): the exact network runs.
    assert torch.equal(trainable.embed(patches, "int8"), trainable(patches).penultimate)
    assert torch.equal(trainable.requires_grad_(False).embed(patches), trainable(patches).penultimate)
    other = load_musicnn()
    with torch.no_grad():
        before = other.embed(patches, "int8")
        state = {k: v * 1.5 if k.startswith("timbral_74.conv") else v for k, v in other.state_dict().items()}
        other.load_state_dict(state)
        fresh = load_musicnn()
        fresh.load_state_dict(state)
        after = other.embed(patches, "int8")  # the cached int8 kernels were rebuilt
        assert not torch.allclose(before, after) and torch.equal(after, fresh.embed(patches, "int8"))


# --------------------------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------------------------

needs_wheel = pytest.mark.skipif(
    not WHEEL.is_file(),
    reason=f"musicnn wheel not at {WHEEL}; run `{convert_musicnn.PIP_COMMAND}` to test the conversion")


@needs_wheel
def test_fresh_conversion_equals_committed_weights(tmp_path):
    out = tmp_path / "musicnn_msd.safetensors"
    assert convert_musicnn.main(["--wheel", str(WHEEL.parent), "--out", str(out)]) == 0
    assert out.read_bytes() == frontend.DEFAULT_WEIGHTS.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))
    from safetensors import safe_open
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
        assert meta["license"] == "ISC" and "Universitat Pompeu Fabra 2019" in meta["license_text"]
        assert set(f.keys()) == {k for k in load_musicnn().state_dict() if not k.endswith("num_batches_tracked")}


@needs_wheel
def test_checkpoint_reader_checks_crc_and_skips_optimiser_state():
    with zipfile.ZipFile(WHEEL) as zf:
        index = zf.read(convert_musicnn.CHECKPOINT_PREFIX + ".index")
        data = bytearray(zf.read(convert_musicnn.CHECKPOINT_PREFIX + ".data-00000-of-00001"))
    names = convert_musicnn.checkpoint_names(index)
    # 64 model variables, 84 Adam slots (two for each of the 42 trainable ones: batch-norm moving
    # averages have none) and Adam's two bias-correction scalars.
    assert len(names) == 150 and sum(convert_musicnn.is_model_tensor(n) for n in names) == 64
    assert sum(n.endswith(("/Adam", "/Adam_1")) for n in names) == 84
    tensors = convert_musicnn.read_checkpoint(index, bytes(data), ["conv2d/kernel"])
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)
    entry = convert_musicnn._parse_entry("conv2d/kernel", convert_musicnn.read_table(index)["conv2d/kernel"])
    data[entry["offset"] + 5] ^= 0xFF
    with pytest.raises(convert_musicnn.CheckpointError, match="CRC32C"):
        convert_musicnn.read_checkpoint(index, bytes(data), ["conv2d/kernel"])


def test_converter_names_the_pip_command_when_the_wheel_is_missing(tmp_path, capsys):
    assert convert_musicnn.main(["--wheel", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert convert_musicnn.PIP_COMMAND in capsys.readouterr().err


def test_a_song_is_resampled_to_16k_once_and_its_windows_cut_from_it(net):
    from features import extract_song

    sr = 22050
    song = np.concatenate([_tone(5.0, sr, 220.0), _tone(4.5, sr, 660.0)])  # 9.5 s: windows at 0 and 3.5 s
    kept = extract_song(song, sr, 6.0)
    assert kept.starts.tolist() == [0, len(song) - 6 * sr]
    windows = frontend.song_windows_16k(song, sr, kept.starts, 6 * sr)
    y16 = resample_audio(song, sr, MUSICNN_SAMPLE_RATE)
    assert [len(w) for w in windows] == [96000, 96000]
    np.testing.assert_array_equal(windows[0], y16[:96000])
    np.testing.assert_array_equal(windows[1], y16[len(y16) - 96000:])  # the tail window ends with the song
    # The same embeddings as resampling each window on its own, up to the windows' edges.
    a = window_embeddings(net, windows, MUSICNN_SAMPLE_RATE, precision="fp32")
    b = window_embeddings(net, kept.audio, sr, precision="fp32")
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.9999, cos
    # A song shorter than a window is repeated to fill it, at 16 kHz as at the song's rate.
    short = _tone(2.0, sr, 440.0)
    (one,) = frontend.song_windows_16k(short, sr, [0], 6 * sr)
    y16 = resample_audio(short, sr, MUSICNN_SAMPLE_RATE)
    assert len(one) == 96000
    np.testing.assert_array_equal(one[:len(y16)], y16)
    np.testing.assert_array_equal(one[len(y16):2 * len(y16)], y16)


@pytest.mark.parametrize("clip_seconds", [None, 3.0])
def test_songs_embedded_together_in_a_worker_get_the_rows_they_get_alone(net, clip_seconds):
    # A worker running the front end takes a few songs per task and puts their patches through it
    # together (batch._process_group): whole clips (synthetic training) and windowed songs alike
    # must come out 59 + 200 wide, with each song's embedding as computed alone.
    from features import N_FEATURES, extract_features
    from workbench import batch

    sr = 22050
    clips = [_tone(3.0 + 0.5 * i, sr, 220.0 * (i + 1)) for i in range(batch.SONGS_PER_TASK_WITH_FRONTEND + 1)]
    together = batch.extract_many(clips, sr=sr, clip_seconds=clip_seconds, n_jobs=1, cache_dir=False,
                                  frontend=net, progress=False)
    assert not together.failures
    for clip, rows in zip(clips, together.features):
        assert rows.shape[1] == N_FEATURES + EMBEDDING_SIZE
        if clip_seconds is None:
            np.testing.assert_allclose(rows[0, :N_FEATURES], extract_features(clip, sr), rtol=1e-6)
            alone = window_embeddings(net, [clip], sr, precision="fp32")
        else:
            from song import song_inputs

            alone = song_inputs(clip, sr, clip_seconds, net, frontend_precision="fp32").features[:, N_FEATURES:]
        np.testing.assert_allclose(rows[:, N_FEATURES:], alone, rtol=1e-4, atol=1e-5)
