"""Training and evaluating on a folder of recordings (`train.py --data-dir`, benchmarks/eval_real.py).

A small folder is generated on the fly: three genres x four synthetic recordings of 11-16 s, written
as WAV, FLAC, OGG and MP3, plus one corrupt ".wav" (random bytes). The real GTZAN clips are only
used by the last test, which skips when ../shared/data is absent.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
import soundfile as sf

import train
from workbench import settings  # noqa: E402
from workbench.data import list_recordings, load_folder, split_tracks  # noqa: E402
from features import SAMPLE_RATE, split_windows
from modeling import MusicGenreMoE
from workbench.synth import generate_clip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import eval_real  # noqa: E402

GENRES = ("classical", "jazz", "rock")
FORMATS = ("wav", "flac", "ogg", "mp3")
SHARED_DATA = ROOT.parent / "shared" / "data"
QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """genre/<genre>_<i>.<fmt> recordings (each genre in every format) and rock/broken.wav."""
    root = tmp_path_factory.mktemp("recordings")
    for g in GENRES:
        (root / g).mkdir()
        for i, fmt in enumerate(FORMATS):
            rng = np.random.default_rng([GENRES.index(g), i])
            y = generate_clip(g, rng, duration=11.0 + i * 1.7)  # 2 or 3 five-second windows
            sf.write(root / g / f"{g}_{i}.{fmt}", y, SAMPLE_RATE)
    (root / "rock" / "broken.wav").write_bytes(np.random.default_rng(0).bytes(20_000))
    return root


# These tests are about folders, splits and windows: the 59 features in 5-s windows keep them fast
# (the front end's path through train.py is tested in test_real_data_defaults_to_the_front_end).
FEATURES_ONLY = ["--frontend", "none", "--clip-seconds", "5"]


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines = []
    metrics = train.main(["--data-dir", str(folder), "--quick", "--cache-dir", "none", "--no-plots", *FEATURES_ONLY,
                          "--n-jobs", "2", "--out", str(out)], log=lambda *a: lines.append(" ".join(map(str, a))))
    return out, metrics, "\n".join(lines)


@pytest.fixture(scope="module")
def data(folder):
    return load_folder(settings.parse_settings(["--data-dir", str(folder), "--cache-dir", "none", "--n-jobs", "2",
                                                   *FEATURES_ONLY]))


def test_every_format_is_read_and_cut_into_windows(data, folder):
    names = {Path(n).name for n in data.track_names}
    assert names == {f"{g}_{i}.{fmt}" for g in GENRES for i, fmt in enumerate(FORMATS)}
    assert data.genres == sorted(GENRES)
    for t, name in enumerate(data.track_names):
        seconds = sf.info(name).duration
        n_windows = len(split_windows(np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32)))
        assert np.sum(data.tracks == t) == n_windows >= 2
        assert len(set(data.labels[data.tracks == t])) == 1
        assert data.genres[data.labels[data.tracks == t][0]] == Path(name).parent.name


def test_split_never_leaks_a_track(data):
    track_labels = eval_real.track_labels_of(data)
    parts = split_tracks(track_labels, [120, 30, 30], seed=0)
    assert all(len(p) > 0 for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(track_labels)))
    side = np.full(len(data.labels), -1)
    for k, p in enumerate(parts):
        side[np.isin(data.tracks, p)] = k
    for t in range(len(track_labels)):  # every window row of a track sits on one side
        assert len(set(side[data.tracks == t])) == 1
    # eval_real's folds: each track tested once; inner validation tracks come from the training fold.
    folds = eval_real.cv_folds(track_labels, 5, seed=0)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(track_labels)))
    s = settings.parse_settings([])
    for f, (tr, te) in enumerate(folds):
        assert not set(tr) & set(te)
        fit, val = eval_real.inner_split(track_labels, tr, s, seed=f)
        assert len(val) > 0 and set(fit) | set(val) == set(tr) and not set(fit) & set(val)


def test_corrupt_file_is_reported_and_skipped(run, folder):
    out, metrics, log = run
    broken = str(folder / "rock" / "broken.wav")
    assert [p for p, _ in metrics["dataset"]["skipped"]] == ["rock/broken.wav"]  # relative: nothing of this machine
    assert broken in log  # the local log names the file in full
    assert "rock/broken.wav" in (out / "classification_report.txt").read_text()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["dataset"]["skipped"][0][0] == "rock/broken.wav"
    assert sum(saved["dataset"]["n_tracks"]) == len(GENRES) * len(FORMATS)  # training completed without it
    assert 0.0 <= saved["track_level"]["test_accuracy"] <= 1.0 and saved["track_level"]["n_tracks"] >= len(GENRES)


def test_long_file_is_predicted_by_windows(run, tmp_path):
    out, _, _ = run
    model = MusicGenreMoE.from_pretrained(out / "hf_model")
    y = generate_clip("jazz", np.random.default_rng(7), duration=63.0)
    path = tmp_path / "long.flac"
    sf.write(path, y, SAMPLE_RATE)
    pred = model.predict_audio(path)
    # 12 full windows plus the 3-s tail as one more window aligned to the end (split_windows' rule).
    assert pred["num_windows"] == len(pred["windows"]) == len(split_windows(y)) == 13
    starts = [w["start"] for w in pred["windows"]]
    assert starts[:12] == [5.0 * i for i in range(12)] and starts[12] == pytest.approx(58.0, abs=1e-3)
    probs = np.array([list(w["probabilities"].values()) for w in pred["windows"]])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert model.config.decision == "centroids"  # recordings: the nearest genre centroid names the song
    # The song is its windows averaged: the mean window input, then the decision (cosine to the centroids).
    z = model.normalise(torch.from_numpy(model.song_inputs(path).features)).mean(0, keepdim=True)
    expected = (10 * model.centroid_cosines(z)).softmax(-1)[0].tolist()
    assert np.allclose(expected, list(pred["probabilities"].values()), atol=1e-5)


def test_eval_real_quick_smoke_run(folder, tmp_path):
    long_path = tmp_path / "song.ogg"
    sf.write(long_path, generate_clip("rock", np.random.default_rng(3), duration=21.0), SAMPLE_RATE)
    res = eval_real.main([str(folder), "--quick", "--no-sim", "--cache-dir", "none", "--n-jobs", "2", "--folds", "4",
                          "--out", str(tmp_path / "eval"), "--predict", str(long_path)], **QUIET)
    n_tracks = len(GENRES) * len(FORMATS)
    assert res["n_tracks"] == n_tracks and [p for p, _ in res["skipped"]] == [str(folder / "rock" / "broken.wav")]
    assert sorted(sum(res["folds"], [])) == sorted({n for fold in res["folds"] for n in fold})  # disjoint
    for m in eval_real.METHODS:
        r = res["cv"][m]
        assert r["n_tracks"] == n_tracks and len(r["fold_accuracy"]) == 4
        lo, hi = r["track_accuracy_ci95"]
        assert lo <= r["track_accuracy"] <= hi
        assert (tmp_path / "eval" / f"confusion_{m}.png").stat().st_size > 0
    assert set(res["cv"]["moe"]["self_activation"]) == set(GENRES)
    pred = res["predictions"][str(long_path)]
    assert pred["num_windows"] == len(pred["windows"]) == 4
    assert (tmp_path / "eval" / "final_model" / "config.json").exists()
    assert "Track-level cross-validation" in (tmp_path / "eval" / "report.md").read_text()


def test_eval_real_sim_to_real_and_pretraining(folder, tmp_path):
    res = eval_real.main([str(folder), "--quick", "--cache-dir", "none", "--n-jobs", "2", "--folds", "2",
                          "--out", str(tmp_path)], **QUIET)
    assert res["sim_to_real"]["genres"] == sorted(GENRES)
    assert res["sim_to_real"]["n_tracks"] == len(GENRES) * len(FORMATS)
    assert res["pretraining"]["pretrained"]["n_tracks"] == len(GENRES) * len(FORMATS)


@pytest.mark.skipif(not (SHARED_DATA / "gtzan-mini-dev").is_dir(), reason="shared GTZAN clips absent")
def test_gtzan_folder_lists_five_recordings_per_genre():
    paths, labels, genres = list_recordings(SHARED_DATA / "gtzan-mini-dev", "blues,classical,jazz,pop,rock")
    assert genres == ["blues", "classical", "jazz", "pop", "rock"]
    assert np.bincount(labels).tolist() == [5] * 5 and all(p.suffix == ".wav" for p in paths)


def test_several_data_dirs_merge_by_genre_name(tmp_path):
    import train

    for root, genres in (("a", ("jazz", "rock")), ("b", ("rock", "pop"))):
        for g in genres:
            (tmp_path / root / g).mkdir(parents=True)
            (tmp_path / root / g / f"{root}-{g}.wav").write_bytes(b"")
    s = settings.parse_settings(["--data-dir", str(tmp_path / "a"), "--data-dir", str(tmp_path / "b")])
    assert s.data_dir == [str(tmp_path / "a"), str(tmp_path / "b")]
    paths, labels, genres = list_recordings(s.data_dir)
    assert genres == ["jazz", "pop", "rock"]
    assert sorted(p.name for p, label in zip(paths, labels) if genres[label] == "rock") == ["a-rock.wav", "b-rock.wav"]
    assert settings.public_settings(s)["data_dir"] == ["a", "b"]


def test_ray_flag_sends_the_folder_extraction_to_ray(tmp_path, monkeypatch):
    from workbench import batch as batch_features
    from workbench import ray_backend
    import train

    assert settings.parse_settings(["--ray"]).ray == "local" and settings.parse_settings([]).ray is None
    assert settings.parse_settings(["--ray", "10.0.0.1:6379"]).ray == "10.0.0.1:6379"
    for g in ("jazz", "rock"):
        (tmp_path / g).mkdir()
        for i in range(3):
            sf.write(tmp_path / g / f"{g}{i}.wav", generate_clip(g, np.random.default_rng(i), duration=5.0),
                            22050)
    calls = []

    def on_ray(paths, **kwargs):  # stands in for the cluster: records the call, extracts locally
        calls.append(kwargs)
        return batch_features.extract_many(paths, n_jobs=1, cache_dir=False, sr=kwargs["sr"],
                                           clip_seconds=kwargs["clip_seconds"], frontend=kwargs["frontend"])

    monkeypatch.setattr(ray_backend, "extract_many_ray", on_ray)
    s = settings.parse_settings(["--data-dir", str(tmp_path), "--ray", "auto", "--cache-dir", "none", *FEATURES_ONLY])
    data = load_folder(s)
    assert calls == [{"sr": 22050, "clip_seconds": 5.0, "cache_dir": False, "address": "auto", "frontend": "none"}]
    assert len(data.track_names) == 6
    assert settings.public_settings(s)["ray"] == "cluster"


def test_real_data_defaults_to_the_front_end(tmp_path):
    import train

    s = settings.parse_settings(["--data-dir", str(tmp_path)])
    assert (s.model["frontend"], s.model["clip_seconds"]) == ("musicnn", 6.0)  # the README's evidence
    s = settings.parse_settings(["--data-dir", str(tmp_path), "--frontend", "none", "--clip-seconds=5"])
    assert (s.model["frontend"], s.model["clip_seconds"]) == ("none", 5.0)  # flags given win
    assert settings.parse_settings([]).model["frontend"] == "none"  # synthetic clips keep the 59 features
