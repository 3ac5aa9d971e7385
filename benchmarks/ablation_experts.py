"""MLP against Kolmogorov-Arnold (KAN) experts: accuracy, parameters and whole-model training step time.

Usage::

    python benchmarks/ablation_experts.py [--data-dir ../shared/data/gtzan-mini-dev] [--quick]
                                          [--repeats 3] [--out runs/ablation_experts.json]

Variants (the whole MusicGenreMoE; only the experts change):

* ``mlp``            default config (expert width 64)
* ``kan``            default KAN: B-spline, grid 5, order 3, expert width 64
* ``kan g3 k2``      B-spline, grid 3, order 2
* ``kan rbf``        Gaussian RBF basis, 8 centres (grid 5 + order 3)
* ``kan matched``    default KAN with the expert width that matches the MLP's parameter count
* ``mlp matched``    MLP with the expert width that matches the default KAN's parameter count

Measurements, all in one run:

* step time: one whole-model training step (forward with labels, backward, gradient clipping,
  AdamW step) at batch 64, interleaved across variants (each repeat times a block of steps of
  every variant in turn, so background load hits all alike); median over repeats; ratio to ``mlp``.
* synthetic: train.py's recipe (120/30/30 clips per genre, early stopping on validation loss),
  test accuracy with a 95% Wilson interval.
* real recordings (``--data-dir``, the five seed genres jazz/blues/rock/pop/classical): track-level
  5-fold cross-validation. Fold f tests one recording per genre (5 recordings, 30 windows) and
  trains on the other 20 for a fixed number of epochs (no early stopping: there is no recording
  to spare for validation, and nothing is chosen on the test fold). Accuracy per 5-s window and per
  recording (window probabilities averaged), pooled over the folds, averaged over ``--repeats``
  fold assignments/initialisations; the 95% Wilson interval uses the number of distinct test units
  (150 windows, 25 recordings), since repeats re-use the same recordings.

``--quick`` shrinks everything for a smoke run (numbers not meaningful).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import evaluation  # noqa: E402
import train  # noqa: E402
from workbench import settings, training  # noqa: E402
from workbench.data import feature_stats, list_recordings, load_synthetic, split_tracks, window_rows  # noqa: E402
from configuration import MusicGenreMoEConfig  # noqa: E402
from workbench.batch import extract_many  # noqa: E402
from features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE  # noqa: E402
from modeling import MusicGenreMoE  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kan_layer import time_cases  # noqa: E402  (the same interleaved timing loop)

SEED_GENRES = ("jazz", "blues", "rock", "pop", "classical")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gtzan-mini-dev"


# -- variants ---------------------------------------------------------------------------------------


def n_params(config_kwargs):
    return sum(p.numel() for p in MusicGenreMoE(MusicGenreMoEConfig(**config_kwargs)).parameters())


def matched_width(target, **config_kwargs):
    """Expert width whose model parameter count is closest to `target` (a scan; the count is monotone)."""
    best = min(range(4, 257), key=lambda w: abs(n_params({**config_kwargs, "expert_hidden_size": w}) - target))
    return best


def variants():
    """name -> MusicGenreMoEConfig overrides."""
    mlp_params = n_params({})
    kan_params = n_params({"expert_type": "kan"})
    return {
        "mlp": {},
        "kan": {"expert_type": "kan"},
        "kan g3 k2": {"expert_type": "kan", "kan_grid_size": 3, "kan_spline_order": 2},
        "kan rbf": {"expert_type": "kan", "kan_basis": "rbf"},
        "kan matched": {"expert_type": "kan", "expert_hidden_size": matched_width(mlp_params, expert_type="kan")},
        "mlp matched": {"expert_hidden_size": matched_width(kan_params)},
    }


# -- step time --------------------------------------------------------------------------------------


def make_step(config_kwargs, batch=64, seed=0):
    """A closure doing one whole-model training step, as training.run_epoch does."""
    torch.manual_seed(seed)
    model = MusicGenreMoE(MusicGenreMoEConfig(**config_kwargs, **ZSCORED_INPUT)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.randn(batch, N_FEATURES), torch.randint(0, 5, (batch,))

    def step():
        out = model(x, labels=y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def time_steps(configs, repeats, iters, batch=64):
    """name -> median over repeats of the mean step time in seconds (interleaved, as bench_kan_layer times layers)."""
    micro = time_cases({name: make_step(cfg, batch) for name, cfg in configs.items()}, repeats, iters)
    return {name: us / 1e6 for name, us in micro.items()}


# -- accuracy ---------------------------------------------------------------------------------------


def normalise(x_train, *others):
    mean, std = feature_stats(x_train)
    return [torch.from_numpy((a - mean) / std).float() for a in (x_train, *others)]


#: This benchmark z-scores its rows once for every model it trains, so each model gets identity
#: stats (the model always z-scores its input with its config's stats; mean 0, std 1 is a no-op).
ZSCORED_INPUT = {"feature_mean": [0.0] * N_FEATURES, "feature_std": [1.0] * N_FEATURES}


def train_fixed_epochs(model, x, y, epochs, s):
    """training.fit for exactly `epochs` epochs, the cosine period spanning them, without weight averaging.

    No early stopping (there is no validation data to stop on) and `ema_decay` 0: the recipe the
    figures in the README were measured with (train.py's default now averages the weights).
    Episodic training (`s.episodic`) adds the prototypical loss as train.py does.
    """
    training.fit(model, (x, y), None, dataclasses.replace(s, t_max=epochs, ema_decay=0.0), log=lambda *_: None,
              epochs=epochs)
    return model


@torch.no_grad()
def probabilities(model, x):
    model.eval()
    return model(x).logits.softmax(-1).numpy()


def synthetic_accuracy(configs, n_per_genre, epochs, seed=0, log=print):
    """name -> {"accuracy", "ci95", "n_test", "train_s"} on train.py's synthetic split."""
    s = settings.TrainSettings(n_per_genre=n_per_genre, epochs=epochs, t_max=epochs, seed=seed, ema_decay=0.0,
                            model={"clip_seconds": CLIP_SECONDS})  # ema_decay 0: the recipe the README figures were measured with
    data = load_synthetic(s)
    splits = split_tracks(data.labels, [120, 30, 30], seed)
    xs = normalise(*(data.features[p] for p in splits))
    ys = [torch.from_numpy(data.labels[p]).long() for p in splits]
    results = {}
    for name, cfg in configs.items():
        torch.manual_seed(seed)
        model = MusicGenreMoE(MusicGenreMoEConfig(**cfg, **ZSCORED_INPUT))
        t0 = time.perf_counter()
        training.fit(model, (xs[0], ys[0]), (xs[1], ys[1]), s, log=lambda *_: None)
        correct = int((probabilities(model, xs[2]).argmax(1) == ys[2].numpy()).sum())
        results[name] = {"accuracy": correct / len(ys[2]), "ci95": list(evaluation.wilson_interval(correct, len(ys[2]))),
                         "n_test": len(ys[2]), "train_s": time.perf_counter() - t0}
        log(f"  synthetic {name:<12} acc {results[name]['accuracy']:.3f}  ({results[name]['train_s']:.0f} s)")
    return results


def load_recordings(data_dir, genres=SEED_GENRES):
    """(features (n_windows, 59), labels, tracks, track_names) of the genres' recordings, 5-s windows."""
    paths, track_labels, _ = list_recordings([data_dir], ",".join(genres))
    result = extract_many(paths, sr=SAMPLE_RATE, clip_seconds=CLIP_SECONDS, progress=False)
    return (*window_rows(result, track_labels), [str(paths[k]) for k in result.ok])


def track_folds(labels, tracks, n_folds, rng):
    """n_folds lists of test tracks; each fold holds about one recording per genre (stratified)."""
    folds = [[] for _ in range(n_folds)]
    for g in np.unique(labels):
        for j, t in enumerate(rng.permutation(np.unique(tracks[labels == g]))):
            folds[j % n_folds].append(int(t))
    return folds


def cv_accuracy(configs, data, epochs, repeats, n_folds=5, log=print):
    """name -> window- and track-level accuracy of track-level CV, averaged over repeats."""
    x_all, labels, tracks, _ = data
    s = settings.TrainSettings()
    sums = {name: {"window": [], "track": [], "train_s": 0.0} for name in configs}
    n_windows, n_tracks = len(labels), len(np.unique(tracks))
    for r in range(repeats):
        folds = track_folds(labels, tracks, n_folds, np.random.default_rng(r))
        for name, cfg in configs.items():
            win_correct, track_correct = 0, 0
            for f, test_tracks in enumerate(folds):
                te = np.isin(tracks, test_tracks)
                x_tr, x_te = normalise(x_all[~te], x_all[te])
                torch.manual_seed(1000 * r + f)
                model = MusicGenreMoE(MusicGenreMoEConfig(**cfg, **ZSCORED_INPUT))
                t0 = time.perf_counter()
                train_fixed_epochs(model, x_tr, torch.from_numpy(labels[~te]).long(), epochs, s)
                sums[name]["train_s"] += time.perf_counter() - t0
                p = probabilities(model, x_te)
                win_correct += int((p.argmax(1) == labels[te]).sum())
                uniq, tp = evaluation.track_average(tracks[te], p)
                t_labels = np.asarray([labels[tracks == t][0] for t in uniq])
                track_correct += int((tp.argmax(1) == t_labels).sum())
            sums[name]["window"].append(win_correct / n_windows)
            sums[name]["track"].append(track_correct / n_tracks)
            log(f"  cv repeat {r} {name:<12} window acc {win_correct / n_windows:.3f}  "
                f"track acc {track_correct / n_tracks:.3f}")
    results = {}
    for name, v in sums.items():
        w, t = float(np.mean(v["window"])), float(np.mean(v["track"]))
        results[name] = {
            "window_accuracy": w, "window_ci95": list(evaluation.wilson_interval(w * n_windows, n_windows)),
            "track_accuracy": t, "track_ci95": list(evaluation.wilson_interval(t * n_tracks, n_tracks)),
            "window_accuracy_per_repeat": v["window"], "track_accuracy_per_repeat": v["track"],
            "n_windows": n_windows, "n_tracks": n_tracks, "train_s": v["train_s"],
        }
    return results


# -- report -----------------------------------------------------------------------------------------


def fmt_ci(acc, ci):
    return f"{acc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def table(configs, params, steps, synth, cv):
    base = steps["mlp"]
    head = "| variant | params | step ms | step ratio | synthetic acc [95% CI] |"
    sep = "|---|---:|---:|---:|---|"
    if cv:
        head += " GTZAN-5 CV window acc [95% CI] | GTZAN-5 CV track acc [95% CI] |"
        sep += "---|---|"
    lines = [head, sep]
    for name in configs:
        row = (f"| {name} | {params[name]:,} | {steps[name] * 1e3:.2f} | {steps[name] / base:.2f}x | "
               f"{fmt_ci(synth[name]['accuracy'], synth[name]['ci95']) if synth else '-'} |")
        if cv:
            c = cv[name]
            row += f" {fmt_ci(c['window_accuracy'], c['window_ci95'])} | {fmt_ci(c['track_accuracy'], c['track_ci95'])} |"
        lines.append(row)
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="GTZAN-layout folder ('' skips the CV)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run; numbers not meaningful")
    p.add_argument("--repeats", type=int, default=3, help="CV fold assignments / initialisations")
    p.add_argument("--cv-epochs", type=int, default=100)
    p.add_argument("--synthetic-per-genre", type=int, default=180)
    p.add_argument("--synthetic-epochs", type=int, default=120)
    p.add_argument("--time-repeats", type=int, default=15)
    p.add_argument("--time-iters", type=int, default=10)
    p.add_argument("--only", default="", help="comma-separated subset of the variants (mlp is always kept)")
    p.add_argument("--out", default=str(ROOT / "runs" / "ablation_experts.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.cv_epochs, a.synthetic_per_genre, a.synthetic_epochs = 1, 5, 40, 5
        a.time_repeats, a.time_iters = 2, 2
    return a


def main(argv=None, log=print):
    a = parse_args(argv)
    configs = variants()
    if a.only:
        keep = {"mlp", *(v.strip() for v in a.only.split(","))}
        configs = {k: v for k, v in configs.items() if k in keep}
    params = {name: n_params(cfg) for name, cfg in configs.items()}
    log(f"torch threads: {torch.get_num_threads()}; variants: " + "; ".join(f"{k}: {v}" for k, v in configs.items()))
    log("step time (whole model, batch 64, forward+backward+AdamW) ...")
    steps = time_steps(configs, a.time_repeats, a.time_iters)
    log("synthetic ...")
    synth = synthetic_accuracy(configs, a.synthetic_per_genre, a.synthetic_epochs, log=log)
    cv = None
    if a.data_dir and Path(a.data_dir).is_dir():
        log(f"track-level CV on {a.data_dir} ({', '.join(SEED_GENRES)}) ...")
        cv = cv_accuracy(configs, load_recordings(a.data_dir), a.cv_epochs, a.repeats, log=log)
    elif a.data_dir:
        log(f"{a.data_dir}: not found, CV skipped")
    report = table(configs, params, steps, synth, cv)
    print(report)
    result = {"variants": configs, "params": params, "step_s": steps,
              "step_ratio": {k: v / steps["mlp"] for k, v in steps.items()},
              "synthetic": synth, "cv": cv, "settings": vars(a), "torch_threads": torch.get_num_threads(),
              "table": report}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    log(f"written to {a.out}")
    return result


if __name__ == "__main__":
    main()
