"""Honest evaluation on real recordings: track-level cross-validation of the MoE against two
baselines on the same folds and features, sim-to-real transfer, synthetic pre-training, and
predictions for any audio files.

    python benchmarks/eval_real.py /work/shared/data/gtzan-mini-dev --genres blues,classical,jazz,pop,rock
    python benchmarks/eval_real.py /work/shared/data/gtzan-mini-dev                # all ten genres
    python benchmarks/eval_real.py DIR --genres blues,classical,jazz,pop,rock --predict a.ogg b.mp3
    python benchmarks/eval_real.py DIR --train-args="--routing-weight 1.0"        # any train.py flags
    python benchmarks/eval_real.py DIR --quick --no-sim --cache-dir none          # smoke run (seconds)
    python benchmarks/eval_real.py DIR1 DIR2 --no-sim --train-args "--frontend musicnn --clip-seconds 6"
    python benchmarks/eval_real.py DIR1 DIR2 --no-sim --methods logreg,1nn --train-args "--frontend musicnn"

DIR holds one sub-folder of recordings per genre (GTZAN's layout), as for `train.py --data-dir`;
several DIRs merge by genre name (e.g. the 30-s clips of gtzan-mini-dev and the 2-3 s excerpts
of gtzan-short-dev).

Protocol
--------
Unit of splitting: the artist (default, ``--split-by artist``): tracks are split by scikit-learn's
StratifiedGroupKFold over the artist groups of `artist_folds.py` (gtzan-artists.csv, emotify-dev/artists.csv;
a blank or unknown artist is its own group), so no artist is on both sides of a split; the MoE's inner
validation tracks are split by artist too. ``--split-by recording`` gives the earlier StratifiedKFold
(``--folds`` folds, shuffled, ``random_state=--seed``); every track is tested exactly once.
Windows of one track are never on both sides of a split. With several DIRs the strata are
genre x folder (every fold tests its share of each folder's recordings of each genre), and
every method's accuracy is also reported on each folder's test tracks apart (pooled over folds,
with Wilson intervals; per repeat with ``--repeats``).

Features: `load_folder` (features.extract_many: workers, cache; unreadable files are
listed and skipped), every track cut into ``clip_seconds`` windows (5 s: six per 30-s clip).
With ``--train-args "--frontend musicnn"`` each window row also holds its 200-d musicnn embedding
(cached), and the MoE *and* the baselines see those same rows; the MoEs start from the pretrained
front end, so ``--predict`` runs it on new audio. ``--methods logreg,1nn`` skips the MoE (a cheap
sweep of inputs or window lengths).

MoE: the recipe of `python train.py` (settings.parse_settings defaults, training.fit: AdamW, cosine
annealing, gradient clipping, early stopping on validation loss), plus any train.py flags given
with ``--train-args``. Early stopping needs validation tracks; they come out of the training
fold only: split_tracks picks a stratified share of the fold's tracks given by train.py's
train:val proportions (120:30, i.e. one of four tracks per genre with five tracks per genre),
seeded by the fold, and training.fit runs on the rest. Then (``--moe-fit refit``, the default) a
fresh MoE is trained on *every* track of the training fold for the early-stopping epoch count
(same optimiser and schedule, training.fit's settings): the epoch count is selected on the inner
validation tracks (nested), and the MoE sees as many tracks as the baselines. ``--moe-fit
holdout`` keeps the early-stopped model trained on the smaller share instead (train.py's own
recipe). The test fold is never used for training, stopping or normalisation. Test-track
prediction: mean of its windows' probabilities.

Baselines, on the same folds and window features: multinomial logistic regression (scikit-learn
defaults, C=1, L2) and 1-nearest-neighbour (Euclidean) on z-scored features. They need no early
stopping, so they are fitted on every window of the training fold (the MoE's fitting *and*
validation tracks). Logistic regression averages window probabilities per track; 1-NN labels
each window by its nearest training window and takes a majority vote per track (a tie goes to
the tied genre holding the single closest match). Normalisation: mean/std of the rows each model
is fitted on (training fold only).

``--repeats R`` reruns the whole CV (new folds, inner splits and initialisations) with seeds
seed+1..seed+R-1 and lists every repeat's correct-track count per method, so a difference between
methods can be told apart from the luck of one split. The headline table is the first repeat's;
a pooled Wilson interval over repeats would count each track R times, so none is given.

Metrics: accuracy with a 95% Wilson interval over all tracks pooled across folds
(evaluation.wilson_interval), macro F1, per-genre recall, per-fold accuracies; for the MoE the
per-genre self-activation (mean gate weight of genre i's expert on genre-i test windows, pooled).
A confusion-matrix PNG per method is written to ``--out``.

Sim-to-real: `train.main` on synthetic clips only (the default 180 clips per genre, 120/30/30
split) for the genres that have a synthetic generator, then every real recording of those genres
is a test recording (window- and track-level), normalised with the synthetic training stats kept
in the model's config, i.e. the synthetic model exactly as a user would run it.

Pre-training: on the same folds, the MoE initialised from the synthetic-trained weights and then
trained with the same recipe, against the from-scratch MoE (only when every selected genre has a
synthetic generator, since the architecture has one expert per genre).

``--predict FILE...``: a final MoE fitted on every track of DIR for a fixed number of epochs,
the median of the CV folds' early-stopping epochs (chosen on inner validation tracks, never on a
test fold), saved to OUT/final_model (save_pretrained), then model.predict_audio on each file.
"""

import argparse
import dataclasses
from types import SimpleNamespace
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import evaluation  # noqa: E402
from workbench import plots  # noqa: E402
import train  # noqa: E402
from workbench import settings, training  # noqa: E402
from workbench.data import feature_stats, list_recordings, load_folder, split_tracks, window_rows  # noqa: E402
from workbench.batch import extract_many  # noqa: E402
from configuration import MusicGenreMoEConfig  # noqa: E402
from modeling import MusicGenreMoE  # noqa: E402

METHODS = ("moe", "centroids", "blend", "logreg", "1nn")
#: Decisions of the fold's trained MoE model itself (`config.decision`), measured with the model's own code.
MODEL_DECISIONS = {"moe": "classifier", "centroids": "centroids", "blend": "blend"}
METHOD_NAMES = {"moe": "MoE", "centroids": "genre centroids (the MoE's, cosine)", "blend": "MoE + centroids (mean)",
                "logreg": "logistic regression", "1nn": "1-NN",
                "moe_pretrained": "MoE, synthetic pre-training"}


# -- settings and data ------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", nargs="+", help="folder(s) with one sub-folder of recordings per genre; several "
                                               "merge by genre name (train.py --data-dir given more than once)")
    p.add_argument("--genres", default=None, help="comma-separated subset (default: every sub-folder)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--split-by", choices=("artist", "recording"), default="artist",
                   help="unit of the folds: artist (StratifiedGroupKFold on the artist indexes; default) or "
                        "recording (StratifiedKFold: optimistic on GTZAN, whose artists come in blocks)")
    p.add_argument("--transfer", nargs="+", default=[], metavar="DIR",
                   help="after CV, fit every method on all the data and test it on DIR's recordings of the "
                        "genres it was trained on (e.g. emotify-dev: another collection)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="also rerun the CV with seeds seed+1.. (repeated k-fold) and report every repeat's "
                        "correct-track counts: shows how much of a difference is the split (default: 1)")
    p.add_argument("--out", default=None, help="results folder (default: runs/eval_real/<dir>-<n>genres)")
    p.add_argument("--train-args", default="", help='extra train.py flags for every MoE, e.g. "--routing-weight 1"')
    p.add_argument("--cache-dir", default=None, help='feature cache (default: features.py\'s); "none" disables')
    p.add_argument("--n-jobs", type=int, default=None, help="feature workers (default: all cores)")
    p.add_argument("--moe-fit", choices=("refit", "holdout"), default="refit",
                   help="refit: early-stop on inner validation tracks, then retrain on the whole training fold "
                        "for that many epochs (default); holdout: keep the early-stopped model")
    p.add_argument("--quick", action="store_true", help="train.py --quick recipe (smoke runs)")
    p.add_argument("--no-sim", action="store_true", help="skip sim-to-real and pre-training")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all; e.g. logreg,1nn for a cheap sweep "
                        "of inputs; --predict and pre-training need moe)")
    p.add_argument("--predict", nargs="+", default=[], metavar="FILE", help="audio files for the final model")
    return p.parse_args(argv)


def train_settings(args, extra=()):
    """TrainSettings exactly as `python train.py --data-dir ... <train-args>` would build them."""
    argv = [a for d in args.data_dir for a in ("--data-dir", d)]
    argv += ["--seed", str(args.seed), "--no-plots", *shlex.split(args.train_args)]
    if args.genres:
        argv += ["--genres", args.genres]
    if args.cache_dir:
        argv += ["--cache-dir", args.cache_dir]
    if args.n_jobs:
        argv += ["--n-jobs", str(args.n_jobs)]
    if args.quick:
        argv.append("--quick")
    return settings.parse_settings(argv + list(extra))


def track_labels_of(data):
    """(n_tracks,) genre index of every track."""
    labels = np.zeros(len(data.track_names), dtype=int)
    labels[data.tracks] = data.labels
    return labels


def rows_of(data, tracks):
    """Window rows belonging to the given tracks."""
    return np.flatnonzero(np.isin(data.tracks, tracks))


def track_sources(data, data_dirs):
    """(n_tracks,) index into data_dirs of the folder each track comes from."""
    roots = [Path(d).expanduser().resolve() for d in data_dirs]
    out = np.zeros(len(data.track_names), dtype=int)
    for t, name in enumerate(data.track_names):
        path = Path(name).resolve()
        out[t] = next(i for i, r in enumerate(roots) if path.is_relative_to(r))
    return out


def cv_folds(track_labels, n_folds, seed, sources=None, groups=None):
    """[(train tracks, test tracks)] from a stratified, shuffled, seeded k-fold over tracks.

    With `groups` (each track's artist group, `track_groups`) the folds are scikit-learn's
    StratifiedGroupKFold: no artist on both sides of a split, each fold's genre mix close to the
    whole's. With `sources` (the folder of each track; several folders) the strata are genre x
    folder, so every fold holds its share of each folder's recordings of each genre; one folder
    gives the plain genre-stratified folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    strata = track_labels if sources is None else track_labels * (int(np.max(sources)) + 1) + sources
    _, counts = np.unique(strata, return_counts=True)
    smallest = int(counts.min())
    if smallest < 2:
        raise ValueError(f"cross-validation needs at least 2 tracks per genre (and folder), got {smallest}")
    if groups is not None:
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        # A stratum may hold one artist (gtzan-mini-dev's five reggae clips are all Bob Marley): the
        # group k-fold then keeps it in one fold; it asks only for as many tracks per stratum as folds.
        sgkf = StratifiedGroupKFold(n_splits=min(n_folds, smallest), shuffle=True, random_state=seed)
        folds = [(tr, te) for tr, te in sgkf.split(np.zeros(len(track_labels)), strata, codes)]
        assert all(not set(codes[tr]) & set(codes[te]) for tr, te in folds), "an artist on both sides of a split"
        return folds
    k = min(n_folds, smallest)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(track_labels)), strata)]


def track_groups(data):
    """(n_tracks,) artist group of every track (`artist_folds`: gtzan-artists.csv, emotify-dev/artists.csv).

    A recording the indexes do not know, or whose artist is blank, is a group of its own.
    """
    import artist_folds

    index = {}
    if (artist_folds.DATA / "gtzan-artists.csv").is_file():
        index = {r.path.resolve(): artist_folds.group_key(r.artist, r.rel) for r in artist_folds.load_recordings()}
    return np.array([index.get(Path(n).resolve(), f"<unknown>:{n}") for n in data.track_names], dtype=object)


def inner_split(track_labels, train_tracks, s, seed, groups=None):
    """(fit tracks, validation tracks) out of a training fold, stratified, with train.py's train:val
    ratio; with `groups`, by artist (the early-stopping epoch is chosen on artists the fit never heard)."""
    train_w, val_w = (float(v) for v in s.split.split(",")[:2])
    if groups is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        k = max(2, int(round((train_w + val_w) / val_w)))
        _, codes = np.unique(np.asarray(groups)[train_tracks], return_inverse=True)
        k = min(k, int(codes.max()) + 1, int(np.bincount(track_labels[train_tracks]).min()))
        fit_idx, val_idx = next(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            np.zeros(len(train_tracks)), track_labels[train_tracks], codes))
        return train_tracks[fit_idx], train_tracks[val_idx]
    fit_idx, val_idx, _ = split_tracks(track_labels[train_tracks], [train_w, val_w, 0.0], seed)
    return train_tracks[fit_idx], train_tracks[val_idx]


# -- models -----------------------------------------------------------------------------------------


def new_moe(s, genres, mean, std, init_state=None, seed=0):
    torch.manual_seed(seed)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)},
                                 feature_mean=mean, feature_std=std, **s.model)
    model = MusicGenreMoE(config)
    if config.frontend != "none":  # as training.build_model: the front end starts pretrained (predict_audio runs it)
        model.load_pretrained_frontend()
    if init_state is not None:
        model.load_state_dict(init_state)
    return model


def train_moe(data, fit_tracks, val_tracks, s, init_state=None, seed=0):
    """training.fit on the fit tracks' windows, early-stopped on the validation tracks'. Returns (model, best_epoch)."""
    fit_rows, val_rows = rows_of(data, fit_tracks), rows_of(data, val_tracks)
    mean, std = feature_stats(data.features[fit_rows])
    model = new_moe(s, data.genres, mean, std, init_state, seed)
    tensors = [(torch.from_numpy(data.features[r]).float(), torch.from_numpy(data.labels[r]).long())
               for r in (fit_rows, val_rows)]  # raw features: the model z-scores with its config's stats
    _, best_epoch = training.fit(model, tensors[0], tensors[1], s, log=lambda *_: None)
    return model, best_epoch


def refit_moe(data, tracks, s, epochs, init_state=None, seed=0):
    """A fresh MoE (or one from init_state) trained on every window of `tracks` for `epochs` epochs."""
    rows = rows_of(data, tracks)
    mean, std = feature_stats(data.features[rows])
    model = new_moe(s, data.genres, mean, std, init_state, seed)
    x, y = torch.from_numpy(data.features[rows]).float(), torch.from_numpy(data.labels[rows]).long()
    training.fit(model, (x, y), None, s, log=lambda *_: None, epochs=epochs)  # fixed epochs, no validation
    return model


@torch.no_grad()
def moe_window_outputs(model, x_raw):
    """(probs, gates) of raw window features, each (n_windows, num_genres), normalised by the model's config."""
    model.eval()
    out = model(torch.from_numpy(np.ascontiguousarray(x_raw)).float())
    return out.logits.softmax(-1).numpy(), out.gate_weights.numpy()


def model_decision(model, x_te, tracks, decision):
    """(window probs, track ids, track scores) of a trained model's song verdicts with `config.decision`
    set to `decision`: the model's own `window_outputs` and `genre_results`, song by song."""
    saved = model.config.decision
    model.config.decision = decision
    try:
        outputs = model.window_outputs(x_te)
        genres = model.config.genres
        window = np.asarray([[r["probabilities"][g] for g in genres] for r in model.genre_results(outputs, windows=True)])
        ids = np.unique(tracks)
        scores = np.asarray([[model.genre_results(outputs.rows(torch.from_numpy(tracks == t)).mean())[0]["probabilities"][g]
                              for g in genres] for t in ids])
    finally:
        model.config.decision = saved
    return window, ids, scores


def logreg_window_probs(x_train, y_train, x_test, n_classes, seed=0):
    """(n_test, n_classes) probabilities of a multinomial logistic regression on z-scored windows."""
    from sklearn.linear_model import LogisticRegression

    mean, std = feature_stats(x_train)
    clf = LogisticRegression(max_iter=5000, random_state=seed).fit((x_train - mean) / std, y_train)
    probs = np.zeros((len(x_test), n_classes))
    probs[:, clf.classes_] = clf.predict_proba((x_test - mean) / std)
    return probs


def nn1_track_scores(x_train, y_train, x_test, test_track_ids, n_classes):
    """1-NN with a majority vote per track.

    Returns (window one-hot votes (n_test, n_classes), unique track ids, track scores (n_tracks,
    n_classes)): a track's score is its vote share, plus a tie-break below one vote (1e-3 times
    minus the distance of the tied genre's closest window) so that argmax picks the tied genre
    with the single closest match.
    """
    mean, std = feature_stats(x_train)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    d = np.sqrt(np.maximum((b ** 2).sum(1)[:, None] + (a ** 2).sum(1)[None, :] - 2 * b @ a.T, 0.0))
    nearest = d.argmin(1)
    votes = np.eye(n_classes)[y_train[nearest]]
    uniq, share = evaluation.track_average(test_track_ids, votes)
    scores = share.copy()
    dmin = d[np.arange(len(b)), nearest]
    for j, t in enumerate(uniq):
        sel = test_track_ids == t
        for c in range(n_classes):
            hit = sel & (y_train[nearest] == c)
            if hit.any():
                scores[j, c] += 1e-3 * (1.0 / (1.0 + dmin[hit].min()))
    return votes, uniq, scores


# -- cross-validation -------------------------------------------------------------------------------


def cross_validate(data, s, folds, methods=METHODS, init_state=None, moe_fit="refit", log=print, groups=None):
    """Run every method on every fold. Returns {method: pooled results} and the MoE's best epochs.

    Pooled results: window-level probs/labels/tracks/gates (MoE) and track-level
    (track ids, labels, scores), concatenated over folds, plus per-fold track accuracy.
    """
    track_labels = track_labels_of(data)
    k = len(data.genres)
    pooled = {m: {"w_probs": [], "w_labels": [], "w_tracks": [], "w_gates": [], "t_ids": [], "t_scores": [],
                  "fold_acc": []} for m in methods}
    best_epochs = []
    for f, (train_tracks, test_tracks) in enumerate(folds):
        t0 = time.perf_counter()
        train_rows, test_rows = rows_of(data, train_tracks), rows_of(data, test_tracks)
        x_tr, y_tr = data.features[train_rows], data.labels[train_rows]
        x_te, y_te, tr_te = data.features[test_rows], data.labels[test_rows], data.tracks[test_rows]
        fold_model = None
        for m in methods:
            gates = None
            if m in ("centroids", "blend"):
                if fold_model is None:
                    raise ValueError(f"--methods {m} needs moe in the same run (it is the MoE model's own decision)")
                probs, t_ids, t_scores = model_decision(fold_model, x_te, tr_te, MODEL_DECISIONS[m])
            elif m in ("moe", "moe_pretrained"):
                fit_tracks, val_tracks = inner_split(track_labels, train_tracks, s, s.seed + f, groups)
                init = init_state if m == "moe_pretrained" else None
                model, best = train_moe(data, fit_tracks, val_tracks, s, init, seed=s.seed + f)
                if moe_fit == "refit":
                    model = refit_moe(data, train_tracks, s, best, init, seed=s.seed + f)
                best_epochs.append(best)
                row_groups = None if groups is None else groups[data.tracks[train_rows]]
                row_groups = data.tracks[train_rows] if row_groups is None else row_groups
                model.config.novelty_threshold = training.novelty_threshold(
                    model, torch.from_numpy(x_tr), y_tr, data.tracks[train_rows], row_groups, seed=s.seed + f)
                model.set_genre_centroids(torch.from_numpy(x_tr), y_tr, (data.tracks[train_rows], row_groups))
                fold_model = model
                if model.config.novelty_threshold is not None:
                    n_flag, n_songs = flagged(model, x_te, tr_te)
                    pooled[m].setdefault("flagged", []).append((n_flag, n_songs))
                probs, gates = moe_window_outputs(model, x_te)
                t_ids, t_scores = evaluation.track_average(tr_te, probs)
            elif m == "logreg":
                probs = logreg_window_probs(x_tr, y_tr, x_te, k, seed=s.seed)
                t_ids, t_scores = evaluation.track_average(tr_te, probs)
            elif m == "1nn":
                probs, t_ids, t_scores = nn1_track_scores(x_tr, y_tr, x_te, tr_te, k)
            else:
                raise ValueError(f"unknown method {m!r}; expected one of {METHODS + ('moe_pretrained',)}")
            r = pooled[m]
            r["w_probs"].append(probs), r["w_labels"].append(y_te), r["w_tracks"].append(tr_te)
            r["t_ids"].append(t_ids), r["t_scores"].append(t_scores)
            if gates is not None:
                r["w_gates"].append(gates)
            r["fold_acc"].append(float((t_scores.argmax(1) == track_labels[t_ids]).mean()))
        log(f"fold {f + 1}/{len(folds)}: test tracks {len(test_tracks)}, train tracks {len(train_tracks)}, "
            + "  ".join(f"{m} {pooled[m]['fold_acc'][-1]:.2f}" for m in methods)
            + f"  ({time.perf_counter() - t0:.1f} s)")
    for r in pooled.values():
        for key in ("w_probs", "w_labels", "w_tracks", "w_gates", "t_ids", "t_scores"):
            r[key] = np.concatenate(r[key]) if r[key] else None
        r["t_labels"] = track_labels[r["t_ids"]]
    return pooled, best_epochs


def by_source(r, sources, source_names):
    """{folder name: track accuracy, its 95% Wilson interval, correct, n} over the pooled test tracks of each folder."""
    out = {}
    correct = r["t_scores"].argmax(1) == r["t_labels"]
    src = sources[r["t_ids"]]
    for i, name in enumerate(source_names):
        sel = src == i
        n, c = int(sel.sum()), int(correct[sel].sum())
        out[name] = {"track_accuracy": c / n if n else float("nan"),
                     "track_accuracy_ci95": list(evaluation.wilson_interval(c, n)), "n_correct": c, "n_tracks": n}
    return out


def summarise(r, genres, sources=None, source_names=()):
    """Track-level (pooled) and window-level metrics of one method's pooled CV results.

    With several data folders (`sources`: folder index per track) also the accuracy on each
    folder's test tracks ("by_source"), e.g. 30-s clips and 2-3 s excerpts apart."""
    tm = evaluation.classification_metrics(r["t_labels"], r["t_scores"], genres)
    wm = evaluation.classification_metrics(r["w_labels"], r["w_probs"], genres)
    out = {
        "track_accuracy": tm["accuracy"], "track_accuracy_ci95": tm["accuracy_ci95"], "track_macro_f1": tm["macro_f1"],
        "n_tracks": int(len(r["t_labels"])), "n_correct": int((r["t_scores"].argmax(1) == r["t_labels"]).sum()),
        "fold_accuracy": r["fold_acc"], "per_genre_recall": {g: tm["per_genre"][g]["recall"] for g in genres},
        "track_confusion_matrix": tm["confusion_matrix"],
        "window_accuracy": wm["accuracy"], "window_accuracy_ci95": wm["accuracy_ci95"], "window_macro_f1": wm["macro_f1"],
        "n_windows": int(len(r["w_labels"])),
    }
    if r.get("flagged"):
        out["flagged"] = [int(sum(a for a, _ in r["flagged"])), int(sum(b for _, b in r["flagged"]))]
    if sources is not None and len(source_names) > 1:
        out["by_source"] = by_source(r, sources, source_names)
    if r["w_gates"] is not None:
        sa = evaluation.self_activation(r["w_labels"], r["w_gates"], genres)
        out |= {"self_activation": sa, "mean_self_activation": float(np.mean(list(sa.values()))),
                "specialisation": evaluation.specialisation(r["w_labels"], r["w_gates"])}
    return out


# -- sim-to-real and the final model ----------------------------------------------------------------


def synthetic_genres(genres):
    from workbench.synth import GENRE_GENERATORS

    return [g for g in genres if g in GENRE_GENERATORS]


def train_synthetic(args, shared, out, log=print):
    """train.main on synthetic clips of the shared genres (in DIR's order). Returns (model, its metrics)."""
    # The real data's front end and window (train.py may default them differently without --data-dir):
    # the synthetic model must take the same input rows as the recordings it is tested on.
    real = train_settings(args).model
    argv = ["--out", str(out), "--genres", ",".join(shared), "--seed", str(args.seed), "--no-plots",
            "--frontend", real["frontend"], "--clip-seconds", str(real["clip_seconds"]), *shlex.split(args.train_args)]
    argv += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    argv += ["--n-jobs", str(args.n_jobs)] if args.n_jobs else []
    argv += ["--quick"] if args.quick else []
    metrics = train.main(argv, log=lambda *_: None)
    model = MusicGenreMoE.from_pretrained(out / "hf_model")
    log(f"synthetic model: {metrics['dataset']['n_tracks']} clips train/val/test, synthetic test accuracy "
        f"{metrics['test_accuracy']:.3f}, best epoch {metrics['best_epoch']}")
    return model, metrics


def sim_to_real(model, data, shared):
    """The synthetic-only model on every real recording of the shared genres (window and track level)."""
    real_index = [data.genres.index(g) for g in shared]
    rows = np.flatnonzero(np.isin(data.labels, real_index))
    to_shared = {ri: si for si, ri in enumerate(real_index)}
    labels = np.asarray([to_shared[l] for l in data.labels[rows]])
    probs, gates = moe_window_outputs(model, data.features[rows])
    uniq, t_probs, t_gates = evaluation.track_average(data.tracks[rows], probs, gates)
    t_labels = np.asarray([to_shared[l] for l in track_labels_of(data)[uniq]])
    r = {"w_probs": probs, "w_labels": labels, "w_gates": gates, "t_scores": t_probs, "t_labels": t_labels,
         "fold_acc": []}
    return summarise(r, shared)


def fit_final_model(data, s, epochs, out, groups=None):
    """MoE on every track for `epochs` epochs, normalised with all tracks' stats, with its genre
    centroids, novelty threshold and prototypes (artist-weighted by `groups`, per track); saved to out."""
    model = refit_moe(data, np.arange(len(data.track_names)), s, epochs, seed=s.seed)
    rows = (data.tracks, data.tracks if groups is None else groups[data.tracks])
    x = torch.from_numpy(data.features)
    model.config.novelty_threshold = training.novelty_threshold(model, x, data.labels, *rows, seed=s.seed)
    model.set_genre_centroids(x, data.labels, rows)
    model.set_genre_prototypes(x, data.labels, rows)
    model.save_pretrained(out)
    return model


def held_out_recordings(dirs, genres, s):
    """(raw window rows, track id per row, genre name per track) of `dirs`' recordings of `genres`,
    with the settings' features (any number of genres: a test set, not a training set)."""
    paths, labels, found = list_recordings(dirs, ",".join(genres))
    result = extract_many(paths, clip_seconds=s.model["clip_seconds"], n_jobs=s.n_jobs, frontend=s.model["frontend"],
                          cache_dir=False if s.cache_dir == "none" else s.cache_dir)
    feats, row_labels, rows_track = window_rows(result, labels)
    track_genre = [found[labels[k]] for k in result.ok]
    return feats, rows_track, track_genre


def flagged(model, x, tracks):
    """(songs flagged "none of these", songs) among the tracks of raw rows `x`, by the model's own verdict."""
    outputs = model.window_outputs(x)
    known = [model.genre_results(outputs.rows(torch.from_numpy(tracks == t)).mean())[0]["known"] for t in np.unique(tracks)]
    return int(len(known) - sum(known)), len(known)


def novelty_rates(model, s, args, shared, test, log=print):
    """"None of these" on another collection: the share of its songs of genres the model never heard
    (e.g. emotify-dev's electronic) flagged unknown, and of its songs of the trained genres."""
    unseen = sorted(set().union(*(set(p.name for p in Path(d).expanduser().iterdir() if p.is_dir())
                                  for d in args.transfer)) - set(model.config.genres))
    out = {"threshold": model.config.novelty_threshold, "rule": f"{training.NOVELTY_PERCENTILE}th percentile of "
           "out-of-fold novelty of the training songs, folds by artist"}
    n_in, m_in = flagged(model, test.features, test.tracks)
    out["in_vocabulary"] = {"genres": shared, "flagged": n_in, "n": m_in}
    if unseen:
        x_new, tracks_new, _ = held_out_recordings(list(args.transfer), unseen, s)
        n_new, m_new = flagged(model, x_new, tracks_new)
        out["unseen"] = {"genres": unseen, "flagged": n_new, "n": m_new}
        log(f"none of these: {n_new}/{m_new} songs of {', '.join(unseen)} flagged; {n_in}/{m_in} of the trained genres")
    return out


def transfer(data, s, args, methods, best_epochs, log=print, groups=None):
    """Every method fitted on all of `data`, tested on the --transfer folders' recordings of its genres.

    The MoE is trained for the median of the CV folds' early-stopping epochs (chosen on the
    training collection only). Returns {method: summary} plus what was tested.
    """
    held = {d: sorted(p.name for p in Path(d).expanduser().iterdir() if p.is_dir()) for d in args.transfer}
    shared = sorted(set(data.genres) & set().union(*held.values()))
    if not shared:
        raise ValueError(f"--transfer {args.transfer}: no genre in common with {data.genres}")
    x_test, test_tracks, track_genre = held_out_recordings(list(args.transfer), shared, s)
    test = SimpleNamespace(features=x_test, tracks=test_tracks, track_names=track_genre)
    labels = np.asarray([data.genres.index(track_genre[t]) for t in test_tracks])  # the training genres' indices
    k, x_all, y_all = len(data.genres), data.features, data.labels
    out = {"folders": [str(d) for d in args.transfer], "genres": shared, "n_tracks": len(test.track_names)}
    model = None
    for m in methods:
        if m == "moe":
            model = refit_moe(data, np.arange(len(data.track_names)), s, int(np.median(best_epochs)), seed=s.seed)
            row_groups = data.tracks if groups is None else groups[data.tracks]
            x_all_t = torch.from_numpy(data.features)
            model.config.novelty_threshold = training.novelty_threshold(model, x_all_t, data.labels, data.tracks,
                                                                         row_groups, seed=s.seed)
            model.set_genre_centroids(x_all_t, data.labels, (data.tracks, row_groups))
            probs, _ = moe_window_outputs(model, test.features)
            t_ids, t_scores = evaluation.track_average(test.tracks, probs)
            out["novelty"] = novelty_rates(model, s, args, shared, test, log)
        elif m in ("centroids", "blend"):
            _, t_ids, t_scores = model_decision(model, test.features, test.tracks, MODEL_DECISIONS[m])
        elif m == "logreg":
            t_ids, t_scores = evaluation.track_average(test.tracks, logreg_window_probs(x_all, y_all, test.features, k))
        else:
            _, t_ids, t_scores = nn1_track_scores(x_all, y_all, test.features, test.tracks, k)
        t_labels = np.asarray([labels[test.tracks == t][0] for t in t_ids])
        correct = int((t_scores.argmax(1) == t_labels).sum())
        out[m] = {"n_correct": correct, "accuracy": correct / len(t_ids),
                  "accuracy_ci95": list(evaluation.wilson_interval(correct, len(t_ids))),
                  "per_genre": {g: float((t_scores.argmax(1) == t_labels)[t_labels == data.genres.index(g)].mean())
                                for g in shared}}
        log(f"transfer to {'+'.join(Path(d).name for d in args.transfer)} ({', '.join(shared)}; {len(t_ids)} "
            f"recordings): {m} {correct}/{len(t_ids)} = {correct / len(t_ids):.3f}")
    return out


def describe_prediction(path, pred):
    """Song-level result and a per-window summary as printable lines."""
    top = sorted(pred["probabilities"].items(), key=lambda kv: -kv[1])[:3]
    win = [w["predicted_genre"] for w in pred["windows"]]
    counts = {g: win.count(g) for g in sorted(set(win), key=lambda g: -win.count(g))}
    lines = [f"{Path(path).name}: {pred['predicted_genre']} ({pred['confidence']:.2f}); "
             f"top-3 {', '.join(f'{g} {p:.2f}' for g, p in top)}",
             f"    {pred['num_windows']} windows voted " + ", ".join(f"{g} {n}" for g, n in counts.items())
             + f"; mean gate on the predicted genre's expert {pred['gate_weights'][pred['predicted_genre']]:.2f}"]
    return lines


# -- reporting --------------------------------------------------------------------------------------


def results_table(summaries):
    lines = ["| method | track accuracy (95% CI) | correct | macro F1 | window accuracy | mean self-activation |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, m in summaries.items():
        lo, hi = m["track_accuracy_ci95"]
        sa = f"{m['mean_self_activation']:.3f}" if "mean_self_activation" in m else "-"
        lines.append(f"| {METHOD_NAMES.get(name, name)} | {m['track_accuracy']:.3f} ({lo:.3f}-{hi:.3f}) | "
                     f"{m['n_correct']}/{m['n_tracks']} | {m['track_macro_f1']:.3f} | {m['window_accuracy']:.3f} | {sa} |")
    return "\n".join(lines)


def source_table(summaries):
    """Track accuracy on each data folder's test tracks (pooled over folds), one row per method."""
    names = list(next(iter(summaries.values()))["by_source"])
    lines = ["| method | " + " | ".join(f"{n}: accuracy (95% CI), correct" for n in names) + " |",
             "| --- " * (len(names) + 1) + "|"]
    for method, m in summaries.items():
        cells = [f"{v['track_accuracy']:.3f} ({v['track_accuracy_ci95'][0]:.3f}-{v['track_accuracy_ci95'][1]:.3f}), "
                 f"{v['n_correct']}/{v['n_tracks']}" for v in m["by_source"].values()]
        lines.append(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_genre_table(summaries, genres):
    names = list(summaries)
    lines = ["| genre | " + " | ".join(f"{METHOD_NAMES.get(n, n)} recall" for n in names) + " | MoE self-activation |",
             "| --- " * (len(names) + 2) + "|"]
    for g in genres:
        sa = summaries.get("moe", {}).get("self_activation", {}).get(g, float("nan"))
        lines.append(f"| {g} | " + " | ".join(f"{summaries[n]['per_genre_recall'][g]:.2f}" for n in names)
                     + f" | {sa:.3f} |")
    return "\n".join(lines)


def main(argv=None, log=print):
    """Run the evaluation; returns the results dict (also written to OUT/results.json)."""
    args = parse_args(argv)
    # Batches of a few dozen 59-dim rows: one thread is faster than several, and immune to
    # oversubscription when other jobs share the cores (5x faster here with a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate(args, argv, log)
    finally:
        torch.set_num_threads(threads)


def evaluate(args, argv, log):
    t_start = time.perf_counter()
    s = train_settings(args)
    data = load_folder(s)
    genres = data.genres
    n_genres = len(genres)
    out = Path(args.out or ROOT / "runs" / "eval_real" / f"{'+'.join(Path(d).name for d in args.data_dir)}-{n_genres}genres")
    out.mkdir(parents=True, exist_ok=True)
    for path, reason in data.skipped:
        log(f"skipped {path}: {reason}")
    track_labels = track_labels_of(data)
    sources = track_sources(data, args.data_dir)
    source_names = [Path(d).name for d in args.data_dir]
    if len(set(source_names)) < len(source_names):
        source_names = [f"{i}:{n}" for i, n in enumerate(source_names)]
    multi = len(args.data_dir) > 1
    groups = track_groups(data) if args.split_by == "artist" else None
    folds = cv_folds(track_labels, args.folds, args.seed, sources if multi else None, groups)
    split_desc = ((f"StratifiedGroupKFold({len(folds)} folds by artist: {len(set(groups))} artist groups, "
                   f"shuffle, random_state={args.seed})" if groups is not None else
                   f"StratifiedKFold({len(folds)} folds by recording, shuffle, random_state={args.seed})")
                  + f" over {len(track_labels)} recordings"
                  + (f" (strata: genre x folder; {', '.join(f'{n} {int((sources == i).sum())}' for i, n in enumerate(source_names))})"
                     if multi else "")
                  + f"; MoE validation tracks: {'StratifiedGroupKFold by artist' if groups is not None else 'split_tracks'} "
                  f"of each training fold with train:val {s.split.split(',')[0]}:{s.split.split(',')[1]} (seed {args.seed}+fold)"
                  + ("; then refit on the whole training fold for the early-stopping epoch count"
                     if args.moe_fit == "refit" else "; early-stopped model kept (holdout)"))
    log(f"data: {data.source}, {n_genres} genres ({', '.join(genres)}), {len(track_labels)} recordings, "
        f"{len(data.labels)} windows of {s.model['clip_seconds']} s; skipped {len(data.skipped)}")
    log(f"split: {split_desc}")
    results = {"data_dir": data.source, "genres": genres, "n_tracks": len(track_labels),
               "n_windows": int(len(data.labels)), "skipped": [[str(p), r] for p, r in data.skipped],
               "sources": {n: int((sources == i).sum()) for i, n in enumerate(source_names)},
               "split": split_desc, "folds": [[data.track_names[t] for t in te] for _, te in folds],
               "train_settings": dataclasses.asdict(s), "command": " ".join(sys.argv) if argv is None else argv}

    t0 = time.perf_counter()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods: expected a subset of {','.join(METHODS)}, got {args.methods!r}")
    if "moe" not in methods and (args.predict or not args.no_sim):
        raise ValueError("--methods without moe needs --no-sim and no --predict")
    pooled, best_epochs = cross_validate(data, s, folds, methods=methods, moe_fit=args.moe_fit, log=log,
                                         groups=groups)
    summaries = {m: summarise(pooled[m], genres, sources, source_names) for m in methods}
    results["cv"] = summaries
    results["moe_best_epochs"] = best_epochs
    results["timings"] = {"cv_s": time.perf_counter() - t0}
    for m in methods:
        plots.confusion_matrix(summaries[m]["track_confusion_matrix"], genres, out / f"confusion_{m}.png",
                               title=f"{METHOD_NAMES[m]}: track-level CV confusion ({len(track_labels)} recordings)")

    if args.repeats > 1:
        t1 = time.perf_counter()
        counts = {m: [summaries[m]["n_correct"]] for m in methods}
        src_counts = {m: {n: [summaries[m]["by_source"][n]["n_correct"]] for n in source_names} for m in methods} if multi else {}
        for rep_seed in range(args.seed + 1, args.seed + args.repeats):
            s_rep = dataclasses.replace(s, seed=rep_seed)
            p_rep, _ = cross_validate(data, s_rep, cv_folds(track_labels, args.folds, rep_seed, sources if multi else None,
                                                            groups),
                                      methods=methods, moe_fit=args.moe_fit, log=lambda *_: None, groups=groups)
            for m in methods:
                counts[m].append(int((p_rep[m]["t_scores"].argmax(1) == p_rep[m]["t_labels"]).sum()))
                if multi:
                    for n, v in by_source(p_rep[m], sources, source_names).items():
                        src_counts[m][n].append(v["n_correct"])
            log(f"repeat seed {rep_seed}: " + "  ".join(f"{m} {counts[m][-1]}" for m in methods))
        results["repeats"] = {"seeds": list(range(args.seed, args.seed + args.repeats)), "n_correct": counts,
                              "mean_accuracy": {m: float(np.mean(c)) / len(track_labels) for m, c in counts.items()}}
        if multi:
            n_src = results["sources"]
            results["repeats"]["n_correct_by_source"] = src_counts
            results["repeats"]["mean_accuracy_by_source"] = {
                m: {n: float(np.mean(c)) / n_src[n] for n, c in d.items()} for m, d in src_counts.items()}
        results["timings"]["repeats_s"] = time.perf_counter() - t1

    shared = synthetic_genres(genres)
    if not args.no_sim and len(shared) >= 2:
        t1 = time.perf_counter()
        synth_model, synth_metrics = train_synthetic(args, shared, out / "synthetic_run", log=log)
        results["sim_to_real"] = sim_to_real(synth_model, data, shared) | {
            "genres": shared, "synthetic_test_accuracy": synth_metrics["test_accuracy"],
            "synthetic_clips": synth_metrics["dataset"]["n_tracks"]}
        plots.confusion_matrix(results["sim_to_real"]["track_confusion_matrix"], shared,
                               out / "confusion_sim_to_real.png", title="Synthetic-trained MoE on real recordings")
        if shared == genres:
            pre, pre_epochs = cross_validate(data, s, folds, methods=("moe_pretrained",),
                                             init_state=synth_model.state_dict(), moe_fit=args.moe_fit, log=log)
            results["pretraining"] = {"scratch": summaries["moe"],
                                      "pretrained": summarise(pre["moe_pretrained"], genres),
                                      "pretrained_best_epochs": pre_epochs}
        else:
            missing = [g for g in genres if g not in shared]
            results["pretraining"] = f"skipped: no synthetic generator for {missing}"
        results["timings"]["sim_s"] = time.perf_counter() - t1

    if args.transfer:
        results["transfer"] = transfer(data, s, args, methods, best_epochs, log, groups)

    if args.predict:
        epochs = int(np.median(best_epochs))
        final = fit_final_model(data, s, epochs, out / "final_model", groups)
        results["final_model"] = {"epochs": epochs, "path": str(out / "final_model"),
                                  "rule": "median of the CV folds' early-stopping epochs, fitted on every track"}
        results["predictions"] = {}
        for path in args.predict:
            pred = final.predict_audio(path)
            results["predictions"][str(path)] = pred

    results["timings"]["total_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    report = format_report(results, args, s)
    (out / "report.md").write_text(report)
    log(report)
    log(f"results written to {out}")
    return results


def format_report(results, args, s):
    genres = results["genres"]
    cmd = results["command"] if isinstance(results["command"], str) else "eval_real.py " + " ".join(results["command"])
    lines = [f"## {len(genres)} genres: {', '.join(genres)}", "", f"command: `{cmd}`",
             f"data: {results['n_tracks']} recordings, {results['n_windows']} windows; skipped {len(results['skipped'])}",
             f"split: {results['split']}", "", "### Track-level cross-validation (pooled over folds)", "",
             results_table(results["cv"]), ""]
    if "by_source" in next(iter(results["cv"].values())):
        lines += ["Each folder's test tracks apart (pooled over folds):", "", source_table(results["cv"]), ""]
    lines += [per_genre_table(results["cv"], genres), "",
             "per-fold track accuracy: " + "; ".join(
                 f"{METHOD_NAMES[m]} {[round(a, 2) for a in results['cv'][m]['fold_accuracy']]}" for m in results["cv"]),
             f"MoE early-stopping epochs per fold: {results['moe_best_epochs']}"]
    if "repeats" in results:
        r = results["repeats"]
        lines += ["", f"### Repeated CV (seeds {r['seeds'][0]}-{r['seeds'][-1]}): correct tracks of {results['n_tracks']} per repeat", "",
                  "| method | per repeat | mean accuracy |", "| --- | --- | --- |"]
        lines += [f"| {METHOD_NAMES[m]} | {' '.join(map(str, c))} | {r['mean_accuracy'][m]:.3f} |"
                  for m, c in r["n_correct"].items()]
        if "n_correct_by_source" in r:
            n_src = results["sources"]
            lines += ["", "| method | " + " | ".join(f"{n} ({k} tracks): per repeat, mean accuracy" for n, k in n_src.items())
                      + " |", "| --- " * (len(n_src) + 1) + "|"]
            lines += [f"| {METHOD_NAMES[m]} | " + " | ".join(
                f"{' '.join(map(str, c))}, {r['mean_accuracy_by_source'][m][n]:.3f}" for n, c in d.items()) + " |"
                for m, d in r["n_correct_by_source"].items()]
    if "sim_to_real" in results:
        r = results["sim_to_real"]
        lines += ["", f"### Sim-to-real: trained on {sum(r['synthetic_clips'])} synthetic clips "
                      f"(synthetic test accuracy {r['synthetic_test_accuracy']:.3f}), tested on real {', '.join(r['genres'])}", "",
                  "| level | accuracy (95% CI) | macro F1 | n |", "| --- | --- | --- | --- |",
                  f"| track | {r['track_accuracy']:.3f} ({r['track_accuracy_ci95'][0]:.3f}-{r['track_accuracy_ci95'][1]:.3f}) "
                  f"| {r['track_macro_f1']:.3f} | {r['n_tracks']} |",
                  f"| window | {r['window_accuracy']:.3f} ({r['window_accuracy_ci95'][0]:.3f}-{r['window_accuracy_ci95'][1]:.3f}) "
                  f"| {r['window_macro_f1']:.3f} | {r['n_windows']} |",
                  "", "track-level recall: " + ", ".join(f"{g} {v:.2f}" for g, v in r["per_genre_recall"].items())
                  + f"; mean self-activation {r['mean_self_activation']:.3f}"]
    if isinstance(results.get("pretraining"), dict):
        p = results["pretraining"]
        lines += ["", "### Synthetic pre-training (same folds)", "",
                  results_table({"moe": p["scratch"], "moe_pretrained": p["pretrained"]}),
                  f"pre-trained early-stopping epochs per fold: {p['pretrained_best_epochs']}"]
    elif "pretraining" in results:
        lines += ["", f"### Synthetic pre-training: {results['pretraining']}"]
    if "transfer" in results:
        tr = results["transfer"]
        lines += ["", f"### Another collection: fitted on all {results['n_tracks']} recordings, tested on "
                      f"{tr['n_tracks']} of {', '.join(Path(d).name for d in tr['folders'])} ({', '.join(tr['genres'])})", "",
                  "| method | correct | accuracy [95% CI] | per genre |", "| --- | --- | --- | --- |"]
        for m in (m for m in METHODS if m in tr):
            r = tr[m]
            lines.append(f"| {METHOD_NAMES[m]} | {r['n_correct']}/{tr['n_tracks']} | {r['accuracy']:.3f} "
                         f"[{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}] | "
                         + ", ".join(f"{g} {v:.2f}" for g, v in r["per_genre"].items()) + " |")
    flags = results["cv"].get("moe", {}).get("flagged")
    if flags:
        lines += ["", f"None of these, in-vocabulary test folds: {flags[0]}/{flags[1]} songs of trained genres flagged "
                      "(threshold calibrated on each training fold, out of fold by artist)"]
    nov = results.get("transfer", {}).get("novelty")
    if nov and "unseen" in nov:
        u, i = nov["unseen"], nov["in_vocabulary"]
        lines += [f"None of these, another collection: {u['flagged']}/{u['n']} songs of {', '.join(u['genres'])} "
                  f"flagged; {i['flagged']}/{i['n']} of its {', '.join(i['genres'])} (threshold {nov['threshold']})"]
    if "predictions" in results:
        f = results["final_model"]
        lines += ["", f"### Predictions of the final model ({f['rule']}: {f['epochs']} epochs; {f['path']})", ""]
        for path, pred in results["predictions"].items():
            lines += describe_prediction(path, pred)
    t = results["timings"]
    lines += ["", "timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
