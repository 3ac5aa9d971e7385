"""The training run end to end: a quick synthetic run learns, specialises, reloads and reproduces."""

import json

import numpy as np
import pytest
import torch

import train
from modeling import MusicGenreMoE, load_moe_model, predict_audio_file, pretty_predict

FIGURES = ("genre_spectrograms.png", "training_curves.png", "confusion_matrix.png", "expert_gates.png",
           "roc_curves.png", "radar_charts.png", "feature_importance.png", "calibration.png")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = train.main(["--quick", "--out", str(out), "--cache-dir", "none"], log=lambda *_: None)
    return out, metrics


def test_quick_run_learns_and_specialises(quick_run):
    _, m = quick_run
    assert m["test_accuracy"] >= 0.9 and m["macro_f1"] >= 0.9
    assert m["mean_self_activation"] >= 0.8
    assert min(m["expert_usage"].values()) >= 0.05
    assert m["specialisation"]["best_match_purity"] >= 0.9


def test_run_folder_holds_weights_metrics_and_figures(quick_run):
    out, m = quick_run
    for name in ("moe_genre_model.pt", "moe_genre_checkpoint.pt", "hf_model/config.json",
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


def test_checkpoint_and_pretrained_folder_reload_to_identical_logits(quick_run):
    out, _ = quick_run
    model, mean, std, genres = load_moe_model(out / "moe_genre_checkpoint.pt")
    hf = MusicGenreMoE.from_pretrained(out / "hf_model").eval()
    x = torch.randn(6, 59)
    assert torch.equal(model(x).logits, hf(x).logits)
    ckpt = torch.load(out / "moe_genre_checkpoint.pt", weights_only=False)
    assert ckpt["genres"] == genres and np.allclose(ckpt["feat_mean"], mean)
    assert ckpt["train_args"]["seed"] == 0


def test_same_seed_same_metrics(quick_run, tmp_path):
    _, m = quick_run
    again = train.main(["--quick", "--out", str(tmp_path), "--no-plots", "--cache-dir", "none"],
                       log=lambda *_: None)
    for key in ("test_accuracy", "macro_f1", "self_activation", "expert_usage", "best_epoch"):
        assert again[key] == m[key], key


def test_seed_api_predicts_a_generated_song(quick_run, tmp_path, capsys):
    import soundfile as sf
    from synth import generate_clip

    out, _ = quick_run
    model, mean, std, genres = load_moe_model(out / "moe_genre_checkpoint.pt")
    y = np.concatenate([generate_clip("rock", np.random.default_rng(s), duration=5.0) for s in (101, 102, 103)])
    sf.write(tmp_path / "rock.wav", y, 22050)
    probs, gates, pred = predict_audio_file(tmp_path / "rock.wav", model, feat_mean=mean, feat_std=std)
    assert probs.shape == (len(genres),) and gates.shape == (len(genres),)
    assert pred == genres[int(probs.argmax())]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    text = pretty_predict("Rock test", probs, gates, pred, genres)
    assert "█" in text and "▪" in text and pred.upper() in capsys.readouterr().out


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(5), 180)
    tr, va, te = train.split_tracks(labels, [120, 30, 30], seed=3)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    for g in range(5):
        assert [np.sum(labels[p] == g) for p in (tr, va, te)] == [120, 30, 30]
    small = np.repeat(np.arange(3), 5)  # five recordings per genre, as in gtzan-mini-dev
    tr, va, te = train.split_tracks(small, [4, 1, 1], seed=0)
    assert all(np.sum(small[p] == g) >= 1 for p in (tr, va, te) for g in range(3))


def test_unknown_flags_are_errors():
    with pytest.raises(SystemExit):
        train.parse_settings(["--no-such-flag"])
    s = train.parse_settings(["--routing-weight", "0.2", "--num-experts-per-tok", "2"])
    assert s.model["routing_weight"] == 0.2 and s.model["num_experts_per_tok"] == 2
    assert train.parse_settings([]).epochs == 120


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
