"""The model's contract: every door from audio to probabilities agrees, and bad inputs fail loudly.

Each test here first reproduced a silent wrong answer of issue 11 (pipeline batching, raw features
through `forward`, integer PCM, stereo, extreme features, pretty_predict's genre order, a
checkpoint that runs code); it now checks the fixed behaviour.
"""

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import synth  # noqa: E402
import upload_to_hub  # noqa: E402
from workbench import hub_export  # noqa: E402
from configuration import MusicGenreMoEConfig  # noqa: E402
from features import N_FEATURES, SAMPLE_RATE, AudioError, as_mono_waveform, extract_windows  # noqa: E402
from modeling import MusicGenreMoE, load_moe_model, predict_audio_file, pretty_predict  # noqa: E402

GENRES = ("blues", "classical", "jazz", "pop", "rock")  # not the synthetic order: mislabels show


@pytest.fixture(scope="module")
def model():
    """A small model with real normalisation stats (from generated clips) and GTZAN-style genres."""
    rng = np.random.default_rng(0)
    clips = [synth.generate_clip(g, rng, duration=5.0) for g in synth.GENRE_GENERATORS for _ in range(2)]
    feats = np.concatenate([extract_windows(y) for y in clips])
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(GENRES)), label2id={g: i for i, g in enumerate(GENRES)},
                                 feature_mean=feats.mean(0), feature_std=feats.std(0) + 1e-3,
                                 hidden_size=32, expert_hidden_size=16, expert_output_size=8,
                                 gate_hidden_sizes=[16, 8], classifier_hidden_size=16)
    return MusicGenreMoE(config).eval()


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract") / "model"
    hub_export.write_model_folder(model, folder)
    return folder


@pytest.fixture(scope="module")
def songs():
    """Two different 11-s songs (two 5-s windows, the tail dropped) at 22,050 Hz."""
    rng = np.random.default_rng(1)
    return [synth.generate_clip(g, rng, duration=11.0) for g in ("jazz", "rock")]


def probs_of(result, genres=GENRES):
    return np.asarray([result["probabilities"][g] for g in genres])


def pipeline_probs(results, genres=GENRES):
    scores = {r["label"]: r["score"] for r in results}
    return np.asarray([scores[g] for g in genres])


def test_every_door_gives_the_same_probabilities(model, export_dir, songs, tmp_path):
    from transformers import AutoFeatureExtractor, pipeline

    y = songs[0]
    path = tmp_path / "song.wav"
    soundfile.write(path, y, SAMPLE_RATE, subtype="FLOAT")
    reference = probs_of(model.predict_audio(y, sampling_rate=SAMPLE_RATE))

    fe = AutoFeatureExtractor.from_pretrained(export_dir, trust_remote_code=True)
    with torch.no_grad():  # the standard transformers call, raw features straight into forward
        forward = model(**fe(y, sampling_rate=SAMPLE_RATE, return_tensors="pt")).logits.softmax(-1).mean(0)
    feats = model.song_inputs(y, SAMPLE_RATE).features
    doors = {
        "forward(**feature_extractor)": forward.numpy(),
        "predict(raw window features)": np.mean([probs_of(r) for r in model.predict(feats)], axis=0),
        "predict_audio(file)": probs_of(model.predict_audio(path)),
        "predict_audio_file": predict_audio_file(path, model)[0],
        "pipeline(file)": pipeline_probs(pipeline(model=str(export_dir), trust_remote_code=True)(str(path))),
        "pipeline(dict)": pipeline_probs(pipeline(model=str(export_dir), trust_remote_code=True)(
            {"raw": y, "sampling_rate": SAMPLE_RATE})),
    }
    for door, p in doors.items():
        np.testing.assert_allclose(p, reference, atol=1e-5, err_msg=door)


def test_pipeline_refuses_batching_and_keeps_each_song_apart(export_dir, songs):
    from transformers import pipeline

    classify = pipeline(model=str(export_dir), trust_remote_code=True)
    inputs = [{"raw": y, "sampling_rate": SAMPLE_RATE} for y in songs]
    singles = [pipeline_probs(classify(x)) for x in inputs]
    assert not np.allclose(singles[0], singles[1])  # two songs the model tells apart
    listed = [pipeline_probs(r) for r in classify(inputs)]  # a list, one song at a time, in input order
    np.testing.assert_allclose(listed, singles, atol=1e-6)
    for size in (2, 4):
        with pytest.raises(ValueError, match=f"one song at a time \\(batch_size=1\\), got {size}"):
            classify(inputs, batch_size=size)
    with pytest.raises(ValueError, match="batch_size=1"):
        pipeline(model=str(export_dir), trust_remote_code=True, batch_size=2)(inputs)


@pytest.mark.parametrize("kwargs", [{"topk": 2}, {"chunk_length_s": 10}, {"return_timestamps": True}])
def test_pipeline_rejects_unknown_arguments(export_dir, songs, kwargs):
    from transformers import pipeline

    classify = pipeline(model=str(export_dir), trust_remote_code=True)
    with pytest.raises(TypeError, match=f"unsupported argument\\(s\\) \\['{next(iter(kwargs))}'\\]"):
        classify({"raw": songs[0], "sampling_rate": SAMPLE_RATE}, **kwargs)
    with pytest.raises(ValueError, match="top_k: expected a positive integer, got 0"):
        classify({"raw": songs[0], "sampling_rate": SAMPLE_RATE}, top_k=0)
    assert len(classify({"raw": songs[0], "sampling_rate": SAMPLE_RATE}, top_k=2)) == 2


def test_integer_pcm_is_scaled_by_its_range(model, songs):
    y = np.clip(songs[0], -1, 1)
    as_float = probs_of(model.predict_audio(y, sampling_rate=SAMPLE_RATE))
    pcm16 = np.clip(np.round(y * 32768), -32768, 32767).astype(np.int16)  # how WAV writers quantise
    pcm32 = np.clip(np.round(y.astype(np.float64) * 2**31), -2**31, 2**31 - 1).astype(np.int32)
    np.testing.assert_allclose(as_mono_waveform(pcm16), y, atol=1 / 32768 + 1e-6)
    for pcm in (pcm16, pcm32):
        np.testing.assert_allclose(probs_of(model.predict_audio(pcm, sampling_rate=SAMPLE_RATE)), as_float, atol=2e-3)
    u8 = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(as_mono_waveform(u8), [-1.0, 0.0, 127 / 128])


def test_stereo_either_way_round_is_mixed_down(model, songs):
    left, right = songs[0], songs[1][: len(songs[0])]
    mono = probs_of(model.predict_audio((left + right) / 2, sampling_rate=SAMPLE_RATE))
    for stereo in (np.stack([left, right]), np.stack([left, right], axis=1)):
        np.testing.assert_allclose(probs_of(model.predict_audio(stereo, sampling_rate=SAMPLE_RATE)), mono, atol=1e-6)


@pytest.mark.parametrize("audio,match", [
    (np.ones(30000, bool), r"got shape \(30000,\), dtype bool"),
    (np.ones(30000, np.complex64), r"got shape \(30000,\), dtype complex64"),
    (np.array(["a"] * 10, object), r"got shape \(10,\), dtype object"),
    (np.zeros((6, 6), np.float32), r"got shape \(6, 6\), dtype float32 \(ambiguous"),
    (np.zeros((3, 4, 5000), np.float32), r"got shape \(3, 4, 5000\), dtype float32"),
    (np.zeros(0, np.float32), r"non-empty waveform, got shape \(0,\)"),
])
def test_bad_waveforms_are_refused_with_shape_and_dtype(model, audio, match):
    with pytest.raises(AudioError, match=match):
        model.predict_audio(audio, sampling_rate=SAMPLE_RATE)


def test_short_recordings_are_repeated_to_a_window_and_under_one_second_refused(model, songs):
    excerpt = songs[0][: int(2.5 * SAMPLE_RATE)]
    result = model.predict_audio(excerpt, sampling_rate=SAMPLE_RATE)
    assert result["num_windows"] == 1
    tiled = np.resize(excerpt, 5 * SAMPLE_RATE)
    np.testing.assert_allclose(probs_of(result), probs_of(model.predict_audio(tiled, sampling_rate=SAMPLE_RATE)),
                               atol=1e-6)
    with pytest.raises(AudioError, match=r"recording too short: .*0\.900 s.*need at least 1\.0 s"):
        model.predict_audio(songs[0][: int(0.9 * SAMPLE_RATE)], sampling_rate=SAMPLE_RATE)


def test_pretty_predict_needs_the_models_genre_order(model, songs, capsys):
    song = model.predict_audio(songs[0], sampling_rate=SAMPLE_RATE)
    probs, gates = probs_of(song), probs_of({"probabilities": song["gate_weights"]})
    with pytest.raises(TypeError):
        pretty_predict("x", probs, gates, song["predicted_genre"])  # no silent synthetic order
    with pytest.raises(ValueError, match="one name per probability"):
        pretty_predict("x", probs, gates, song["predicted_genre"], genres=GENRES[:3])
    text = pretty_predict("x", probs, gates, song["predicted_genre"], model.config.genres)
    best = GENRES[int(np.argmax(probs))]
    assert text.splitlines()[6].split()[0] == best  # the top bar carries the top genre's name


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path, model):
    _Exploit.marker = tmp_path / "pwned"
    bad = tmp_path / "moe_genre_checkpoint.pt"
    with open(bad, "wb") as f:
        pickle.dump({"config": model.config.to_dict(), "model_state_dict": _Exploit()}, f)
    with pytest.raises(ValueError, match="not a music-genre-moe checkpoint"):
        load_moe_model(bad)
    assert not _Exploit.marker.exists()


def test_load_moe_model_takes_a_plain_checkpoint_and_folders(tmp_path, model, export_dir):
    ckpt = tmp_path / "moe_genre_checkpoint.pt"
    torch.save({"config": model.config.to_dict(), "model_state_dict": model.state_dict(),
                "feat_mean": torch.tensor(model.config.feature_mean), "genres": list(GENRES)}, ckpt)
    x = torch.as_tensor(np.asarray(model.config.feature_mean, np.float32)[None] + 0.5)
    for source in (ckpt, export_dir, export_dir.parent):  # .pt, save_pretrained folder, run-like folder
        if source == export_dir.parent:
            (export_dir.parent / "hf_model").symlink_to(export_dir)
        loaded, mean, std, genres = load_moe_model(source)
        assert genres == list(GENRES) and mean.shape == std.shape == (N_FEATURES,)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="expected a run folder"):
        load_moe_model(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)
