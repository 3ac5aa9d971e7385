"""The training run end to end: a quick synthetic run learns, specialises, reloads and reproduces."""

import json

import numpy as np
import pytest
import torch

import train
from workbench import settings, training  # noqa: E402
from workbench.data import Dataset, prepare_splits, split_tracks  # noqa: E402
from modeling import MusicGenreMoE, load_moe_model, predict_audio_file, pretty_predict

FIGURES = ("genre_spectrograms.png", "training_curves.png", "confusion_matrix.png", "expert_gates.png",
           "roc_curves.png", "radar_charts.png", "feature_importance.png", "calibration.png")


def test_quick_run_learns_and_specialises(quick_training):
    _, m = quick_training
    assert m["test_accuracy"] >= 0.9 and m["macro_f1"] >= 0.9
    assert m["mean_self_activation"] >= 0.8
    assert min(m["expert_usage"].values()) >= 0.05
    assert m["specialisation"]["best_match_purity"] >= 0.9


def test_run_folder_holds_weights_metrics_and_figures(quick_training):
    out, m = quick_training
    for name in ("moe_genre_checkpoint.pt", "hf_model/config.json",
                 "hf_model/model.safetensors", "metrics.json", "classification_report.txt", "train_args.json",
                 *FIGURES):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "macro_f1", "per_genre", "self_activation", "specialisation", "expert_usage",
                "calibration", "dataset"):
        assert key in saved
    assert set(saved["calibration"]) >= {"nll", "ece", "nll_scaled", "ece_scaled", "temperature"}
    assert saved["train_args"]["quick"] is True
    assert saved["dataset"]["name"] == "synthetic"


def test_checkpoint_and_pretrained_folder_reload_to_identical_logits(quick_training):
    out, _ = quick_training
    model, mean, std, genres = load_moe_model(out / "moe_genre_checkpoint.pt")
    hf = MusicGenreMoE.from_pretrained(out / "hf_model").eval()
    x = torch.randn(6, 59)
    assert torch.equal(model(x).logits, hf(x).logits)
    # Only tensors and plain types: the safe loader reads it, nothing is unpickled beyond that.
    ckpt = torch.load(out / "moe_genre_checkpoint.pt", weights_only=True)
    assert ckpt["genres"] == genres and np.allclose(ckpt["feat_mean"].numpy(), mean)
    assert isinstance(ckpt["feat_std"], torch.Tensor) and type(ckpt["config"]) is dict
    assert ckpt["train_args"]["seed"] == 0
    again, *_ = load_moe_model(out)  # the run folder itself
    assert torch.equal(again(x).logits, hf(x).logits)


def test_same_seed_same_metrics(quick_training, tmp_path):
    _, m = quick_training
    again = train.main(["--quick", "--out", str(tmp_path), "--no-plots", "--cache-dir", "none"],
                       log=lambda *_: None)
    for key in ("test_accuracy", "macro_f1", "self_activation", "expert_usage", "best_epoch"):
        assert again[key] == m[key], key


def test_seed_api_predicts_a_generated_song(quick_training, tmp_path, capsys):
    import soundfile as sf
    from workbench.synth import generate_clip

    out, _ = quick_training
    model, mean, std, genres = load_moe_model(out / "moe_genre_checkpoint.pt")
    y = np.concatenate([generate_clip("rock", np.random.default_rng(s), duration=5.0) for s in (101, 102, 103)])
    sf.write(tmp_path / "rock.wav", y, 22050)
    probs, gates, pred = predict_audio_file(tmp_path / "rock.wav", model, feat_mean=mean, feat_std=std)
    assert probs.shape == (len(genres),) and gates.shape == (len(genres),)
    assert pred == "rock", (pred, dict(zip(genres, probs.round(3))))  # the rock song comes out rock
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    text = pretty_predict("Rock test", probs, gates, pred, genres)
    assert "█" in text and "▪" in text and pred.upper() in capsys.readouterr().out


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(5), 180)
    tr, va, te = split_tracks(labels, [120, 30, 30], seed=3)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    for g in range(5):
        assert [np.sum(labels[p] == g) for p in (tr, va, te)] == [120, 30, 30]
    small = np.repeat(np.arange(3), 5)  # five recordings per genre, as in gtzan-mini-dev
    tr, va, te = split_tracks(small, [4, 1, 1], seed=0)
    assert all(np.sum(small[p] == g) >= 1 for p in (tr, va, te) for g in range(3))


def small_dataset(n_tracks=12, windows=3, genres=("a", "b", "c"), seed=0):
    rng = np.random.default_rng(seed)
    labels_per_track = np.arange(n_tracks) % len(genres)
    tracks = np.repeat(np.arange(n_tracks), windows)
    labels = labels_per_track[tracks]
    feats = (rng.normal(size=(len(tracks), 59)) * 10 + 100 + labels[:, None]).astype(np.float32)
    return Dataset(feats, labels, tracks, [f"t{i}" for i in range(n_tracks)], list(genres), "x", [], {})


def test_prepare_splits_and_build_model_are_what_main_uses():
    data = small_dataset()
    s = settings.parse_settings(["--split", "2,1,1", "--seed", "4", "--hidden-size", "16"])
    sp = prepare_splits(data, s)
    assert sum(len(t) for t in sp.tracks) == 12 and not set(sp.tracks[0]) & set(sp.tracks[2])
    for part, rows in zip(sp.tracks, sp.rows):  # windows of a track stay on its side
        assert set(data.tracks[rows]) == set(part)
    assert np.allclose(sp.mean, data.features[sp.rows[0]].mean(0), atol=1e-4)
    x, y = sp.tensors[0]
    assert torch.equal(x, torch.from_numpy(data.features[sp.rows[0]]))  # raw: the model z-scores
    model = training.build_model(data.genres, sp.mean, sp.std, s)
    assert model.config.genres == ["a", "b", "c"] and model.config.hidden_size == 16
    assert np.allclose(model.config.feature_std, sp.std)


def test_input_gradient_importance_is_per_standard_deviation():
    """Importance of raw feature j = mean |d logit / d z_j| (z-scored units), whatever its scale."""
    data = small_dataset()
    s = settings.parse_settings(["--split", "2,1,1"])
    sp = prepare_splits(data, s)
    torch.manual_seed(0)
    model = training.build_model(data.genres, sp.mean, sp.std, s).eval()
    x, y = sp.tensors[2]
    got = training.input_gradient_importance(model, x, y)
    mean, std = torch.from_numpy(sp.mean), torch.from_numpy(sp.std)
    z = ((x - mean) / std).requires_grad_(True)
    model(z * std + mean).logits.gather(1, y[:, None]).sum().backward()
    assert np.allclose(got, z.grad.abs().mean(0).numpy(), rtol=1e-4, atol=1e-7)


def test_unknown_flags_are_errors():
    with pytest.raises(SystemExit):
        settings.parse_settings(["--no-such-flag"])
    s = settings.parse_settings(["--routing-weight", "0.2", "--num-experts-per-tok", "2"])
    assert s.model["routing_weight"] == 0.2 and s.model["num_experts_per_tok"] == 2
    assert settings.parse_settings([]).epochs == 120


def test_seed_study_counts_errors_over_seeds(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_study.py"
    spec = importlib.util.spec_from_file_location("seed_study", path)
    seed_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_study)
    assert seed_study.seed_list("3-5") == [3, 4, 5] and seed_study.seed_list("0,2") == [0, 2]
    seed_study.main(["--seeds", "0,1", "--train-args", "--quick --n-per-genre 20 --cache-dir none"])
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith("seed ")]
    assert len(lines) == 2 and "2 seeds [--quick" in out and "test clips" in out


def test_flags_given_always_win_and_abbreviations_are_refused(tmp_path, capsys):
    from workbench.settings import parse_settings

    s = parse_settings(["--quick", "--epochs", "120"])
    assert s.epochs == 120 and s.n_per_genre == 40  # quick lowers only what was not given
    data = ["--data-dir", str(tmp_path)]
    real = parse_settings(data)
    assert real.model["frontend"] == "musicnn" and real.model["clip_seconds"] == 6.0
    given = parse_settings(data + ["--clip-seconds", "5", "--frontend", "none"])
    assert given.model["clip_seconds"] == 5.0 and given.model["frontend"] == "none"
    assert given.model["prototype_space"] == "features"  # the front end's few-shot default follows the given front end
    with pytest.raises(SystemExit):
        parse_settings(data + ["--clip-sec", "5"])  # an abbreviation is an error, never a silent default
    assert "--clip-sec" in capsys.readouterr().err


def test_split_by_artist_keeps_every_artist_on_one_side_and_big_artists_in_training():
    labels = np.repeat([0, 1], 30)
    groups = np.array(["prolific"] * 20 + [f"a{i}" for i in range(10)] + ["b"] * 20 + [f"c{i}" for i in range(10)])
    tr, va, te = split_tracks(labels, [120, 30, 30], 0, groups)
    assert not (set(groups[tr]) & set(groups[te]) or set(groups[tr]) & set(groups[va]) or set(groups[va]) & set(groups[te]))
    assert {"prolific", "b"} <= set(groups[tr])  # a big artist never swallows a test split
    assert len(te) == 10 and len(va) == 10 and len(tr) == 40


def test_artist_weighted_centroids_count_every_artist_once():
    from prototypes import artist_weighted_prototypes

    v1, v2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    emb = torch.stack([v1, v1, v1, v2])            # artist x: three songs, artist y: one
    protos = artist_weighted_prototypes(emb, [0, 0, 0, 0], 1, songs=[0, 1, 2, 3], artists=["x", "x", "x", "y"])
    torch.testing.assert_close(protos[0], torch.tensor([0.5, 0.5]))  # not the row mean (0.75, 0.25)


def test_novelty_threshold_is_out_of_fold_and_leaves_the_centroids():
    from configuration import MusicGenreMoEConfig
    from modeling import MusicGenreMoE
    from workbench.training import NOVELTY_PERCENTILE, novelty_threshold

    torch.manual_seed(0)
    model = MusicGenreMoE(MusicGenreMoEConfig(id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})).eval()
    model.set_feature_stats(np.zeros(59), np.ones(59))
    rng = np.random.default_rng(0)
    centre = {0: rng.normal(size=59), 1: rng.normal(size=59)}
    labels = np.repeat([0, 1], 20)
    x = torch.tensor(np.stack([centre[l] + 0.3 * rng.normal(size=59) for l in labels]), dtype=torch.float32)
    tracks, artists = np.arange(40), np.arange(40) // 2
    model.set_genre_centroids(x, labels, (tracks, artists))
    before = dict(model.config.genre_centroids)
    threshold = novelty_threshold(model, x, labels, tracks, artists)
    assert model.config.genre_centroids == before
    # Out of fold, so above the in-sample novelty of most songs, and a percentile of real scores.
    in_sample = [model.genre_results(model.window_outputs(x[i:i + 1]).mean())[0]["novelty"] for i in range(40)]
    assert 0 < threshold < 1 and threshold >= np.percentile(in_sample, NOVELTY_PERCENTILE) - 1e-6
