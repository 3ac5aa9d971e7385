"""One song through every door (predict_audio on a file and on a waveform, the pipeline loaded from
a saved folder with remote code, the feature extractor, classify.py, the function Ray workers run,
the demo): the same verdict to 1e-5, window times included, before and after `add_genre`."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import app
import classify
from configuration import MusicGenreMoEConfig
from features import SAMPLE_RATE, load_audio
from modeling import MusicGenreMoE
from pipeline import MusicGenreFeatureExtractor
from song import song_inputs
from workbench import tagging
from workbench.synth import generate_clip

GENRES = ["blues", "classical", "jazz", "pop", "rock"]
TOL = 1e-5


def make_model(frontend, songs):
    """An untrained model whose stats fit the songs, with the trained genres' prototypes stored."""
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(GENRES)), label2id={g: i for i, g in enumerate(GENRES)},
                                 frontend=frontend, clip_seconds=5.0)
    model = MusicGenreMoE(config)
    if frontend != "none":
        model.load_pretrained_frontend()
    rows = np.concatenate([song_inputs(y, SAMPLE_RATE, 5.0, model.frontend).features for y in songs])
    model.set_feature_stats(rows.mean(0), rows.std(0) + 1e-3)
    model.set_genre_prototypes(torch.from_numpy(rows), np.arange(len(rows)) % len(GENRES))
    return model.eval()


@pytest.fixture(scope="module", params=["none", "musicnn"])
def setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"doors-{request.param}")
    rng = np.random.default_rng(7)
    song = np.concatenate([generate_clip(g, rng, duration=5.0) for g in ("rock", "jazz")] +
                          [generate_clip("rock", rng, duration=2.5)])           # 12.5 s: the last window is aligned to the end
    short = generate_clip("blues", rng, duration=3.0)                          # shorter than one window
    paths = [root / "song.wav", root / "short.wav"]
    for p, y in zip(paths, (song, short)):
        sf.write(p, y, SAMPLE_RATE, subtype="FLOAT")
    model = make_model(request.param, [song, short])
    return model, paths, root


def same(a, b, where):
    """Two verdicts (or windows) agree: genre, numbers to TOL, window times exactly."""
    assert a["predicted_genre"] == b["predicted_genre"], where
    for key in ("probabilities", "gate_weights", "prototype_scores", "tags"):
        if key in a or key in b:
            assert key in a and key in b and set(a[key]) == set(b[key]), (where, key)
            for k in a[key]:
                assert a[key][k] == pytest.approx(b[key][k], abs=TOL), (where, key, k)
    assert a["confidence"] == pytest.approx(b["confidence"], abs=TOL), where


def doors(model, path, folder, tmp_path, monkeypatch):
    """The verdict of `path` through every door, as {door: verdict dict with windows}."""
    from transformers import pipeline as hf_pipeline

    out = {"predict_audio(path)": model.predict_audio(str(path)),
           "predict_audio(waveform)": model.predict_audio(load_audio(path, sr=SAMPLE_RATE), SAMPLE_RATE),
           "predict_audio(bytes)": model.predict_audio(path.read_bytes()),
           "app": app.analyse(model, path)}
    model.save_pretrained(folder)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    pipe = hf_pipeline(model=str(folder), trust_remote_code=True)
    out["pipeline"] = pipe(str(path), details=True)
    top = pipe(str(path))[0]
    assert top["label"] == out["pipeline"]["predicted_genre"]

    settings = tagging.Settings(sr=SAMPLE_RATE, clip_seconds=5.0, top_k=3, want_windows=True)
    (rec,), failures = tagging.classify_paths(model, [str(path)], settings)  # what every Ray worker runs
    assert failures == []
    out["ray worker (classify_paths)"] = _from_record(rec)
    csv, jsonl = tmp_path / f"{path.stem}.csv", tmp_path / f"{path.stem}.jsonl"
    assert classify.main([str(path), "--model", str(folder), "--out", str(csv), "--jsonl", str(jsonl),
                          "--n-jobs", "1", "--no-progress", "--overwrite"]) == 0
    out["classify.py"] = _from_record(json.loads(jsonl.read_text().splitlines()[0]))
    return out


def _from_record(rec):
    """classify.py's JSONL record in the verdict's names."""
    v = {"predicted_genre": rec["genre"], "confidence": rec["confidence"], "probabilities": rec["probabilities"],
         "gate_weights": rec["gate_weights"], "windows": [
             {"start": w["start"], "end": w["end"], "predicted_genre": w["genre"], "confidence": w["confidence"],
              "probabilities": w["probabilities"], "gate_weights": w["gate_weights"]} for w in rec["windows"]]}
    for key in ("prototype_scores", "tags"):
        if key in rec:
            v[key] = rec[key]
    return v


def check_agreement(results):
    ref_name, ref = next(iter(results.items()))
    for name, got in results.items():
        same(ref, got, name)
        assert [(w["start"], w["end"]) for w in got["windows"]] == [(w["start"], w["end"]) for w in ref["windows"]], name
        for k, (a, b) in enumerate(zip(ref["windows"], got["windows"])):
            same({kk: v for kk, v in a.items() if kk not in ("tags", "prototype_scores")},
                 {kk: v for kk, v in b.items() if kk not in ("tags", "prototype_scores")},
                 f"{name} window {k}")
    return ref


def test_every_door_agrees_before_and_after_add_genre(setup, tmp_path, monkeypatch):
    model, (song, short), root = setup
    before = check_agreement(doors(model, song, tmp_path / "saved-before", tmp_path, monkeypatch))
    assert [(w["start"], w["end"]) for w in before["windows"]] == [(0.0, 5.0), (5.0, 10.0), (7.5, 12.5)]
    assert before["duration_s"] == 12.5 and "prototype_scores" not in before
    if model.config.frontend == "musicnn":
        assert len(before["tags"]) == 10 and all(0 <= p <= 1 for p in before["tags"].values())

    # The feature extractor (the Hub's AutoFeatureExtractor door): the same window probabilities.
    fe = MusicGenreFeatureExtractor.for_config(model.config)
    inputs = fe(load_audio(song, sr=SAMPLE_RATE), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        probs = model(**{k: inputs[k] for k in ("input_features", "log_mel") if k in inputs}).logits.softmax(-1)
    for w, p in zip(before["windows"], probs.tolist()):
        assert [w["probabilities"][g] for g in GENRES] == pytest.approx(p, abs=TOL)

    short_verdict = check_agreement(doors(model, short, tmp_path / "saved-short", tmp_path, monkeypatch))
    assert [(w["start"], w["end"]) for w in short_verdict["windows"]] == [(0.0, 3.0)]  # clipped to the song

    # add_genre from a few examples; every door then names it the same way.
    surf = generate_clip("blues", np.random.default_rng(3), duration=5.0)
    model.add_genre("surf", [surf], sampling_rate=SAMPLE_RATE)
    try:
        after = check_agreement(doors(model, song, tmp_path / "saved-after", tmp_path, monkeypatch))
        assert "surf" in after["prototype_scores"]
    finally:
        model.config.prototypes.pop("surf")
