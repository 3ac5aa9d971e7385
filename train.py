"""Train the music-genre Mixture-of-Experts and write a run folder (weights, metrics, figures).

Paste-ready:

    python train.py                                  # 900 synthetic clips (180 per genre), the seed's recipe
    python train.py --quick --out runs/quick         # a small, fast run (smoke tests, the notebook's quick mode)
    python train.py --data-dir ~/data/gtzan/genres --genres blues,classical,jazz,pop,rock --out runs/gtzan5
    python train.py --expert-type kan --out runs/kan # Kolmogorov-Arnold experts
    python train.py --num-experts-per-tok 2          # sparse top-2 gating
    python train.py --help                           # every setting, with its default

Every setting has one default, in `TrainSettings` (training) or `MusicGenreMoEConfig` (model and
loss); both are saved with the weights. Synthetic clips are split 120/30/30 per genre; recordings
from `--data-dir` are split by recording (stratified, seeded) and cut into `clip_seconds` windows,
so windows of one track never sit on both sides of a split.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import evaluation
import plots
import upload_to_hub
from atomic_files import (clean_stale_partials, move_into_place, partial_folder, replacing, write_json,
                          unusable_output, write_text)
from configuration import PROTOTYPE_METRICS, PROTOTYPE_SPACES, MusicGenreMoEConfig
from batch_features import extract_many
from features import FEATURE_GROUPS, FEATURE_NAMES, N_FEATURES, SAMPLE_RATE, load_audio
from fewshot import batch_prototypical_loss
from modeling import MusicGenreMoE

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff", ".aif")
LAYOUT = "DIR/<genre>/<audio files>, one sub-folder of recordings per genre (GTZAN's layout)"
RUN_KIND = "run"  # run folders are built in .run-partial-<name>-<pid>-<random> beside --out


class SettingsError(ValueError):
    """A flag, or the data it names, cannot make a run: reported as one line before any work."""


def _opt(default, help, unit=None, lo=None, hi=None, lo_open=False, hi_open=False, choices=None):
    """A TrainSettings field with what its flag needs: a sentence, its unit, its range or choices."""
    meta = dict(help=help, unit=unit, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices)
    return field(default=default, metadata=meta)


@dataclass
class TrainSettings:
    out: str = _opt("runs/latest", "Run folder to write; it is built in a hidden sibling folder and moved into "
                    "place only when complete.", unit="path")
    overwrite: bool = _opt(False, "Replace an existing non-empty --out (without it such a folder is refused).")
    data_dir: list | None = _opt(None, "Folder of your own recordings laid out as " + LAYOUT + "; give it more "
                                 "than once to merge folders by genre name; without it the model trains on "
                                 "synthetic audio.", unit="path")
    genres: str | None = _opt(None, "Comma-separated subset of the genres to train on, at least two "
                              "(default: every genre).", unit="names")
    n_per_genre: int = _opt(180, "Synthetic clips generated per genre (ignored with --data-dir).", unit="clips",
                            lo=1, hi=100_000)
    split: str = _opt("120,30,30", "Train,validation,test proportions, three numbers > 0; recordings are split "
                      "by recording, stratified by genre (synthetic: clips per genre).", unit="proportions")
    seed: int = _opt(0, "Seed of the data generation, the split, the initialisation and the batch order.",
                     unit="integer", lo=0, hi=2**32 - 1)
    epochs: int = _opt(120, "Maximum number of passes over the training split.", unit="epochs", lo=1, hi=100_000)
    batch_size: int = _opt(64, "Training rows per optimiser step.", unit="rows", lo=1, hi=1_000_000)
    lr: float = _opt(3e-3, "AdamW learning rate at the start of the cosine schedule.", unit="per step",
                     lo=0, hi=10, lo_open=True)
    weight_decay: float = _opt(1e-4, "AdamW decoupled weight decay.", unit="per step", lo=0, hi=10)
    t_max: int = _opt(120, "Period of the cosine learning-rate annealing.", unit="epochs", lo=1, hi=100_000)
    eta_min: float = _opt(1e-5, "Learning rate at the bottom of the cosine schedule.", unit="per step", lo=0, hi=10)
    grad_clip: float = _opt(1.0, "Maximum gradient norm; larger gradients are scaled down to it.", unit="L2 norm",
                            lo=0, lo_open=True, hi=1e6)
    ema_decay: float = _opt(0.995, "Decay of the exponential moving average of the weights that is validated and "
                            "saved; 0 turns the average off.", unit="per step", lo=0, hi=1, hi_open=True)
    patience: int = _opt(20, "Early stopping: epochs without a lower validation loss before training stops.",
                         unit="epochs", lo=1, hi=100_000)
    n_jobs: int | None = _opt(None, "Worker processes for feature extraction (default: every core).",
                              unit="processes", lo=1, hi=1024)
    ray: str | None = _opt(None, "Extract the recordings' features on Ray (ray_backend.extract_many_ray): "
                           "'local' starts a local Ray, 'auto' or HOST:PORT joins a cluster whose nodes can read "
                           "the data folders (needs requirements-ray.txt).", unit="address")
    cache_dir: str | None = _opt(None, "Feature cache folder (default: batch_features' own); 'none' disables "
                                 "the cache.", unit="path")
    plots: bool = _opt(True, "Write the eight figures into the run folder.")
    quick: bool = _opt(False, "Small data and few epochs for smoke tests (40 clips per genre, 40 epochs); "
                       "flags you set yourself win.")
    episodic: bool = _opt(False, "Add the Prototypical-Networks loss (fewshot.py), each minibatch an episode.")
    proto_weight: float = _opt(1.0, "Weight of the prototypical loss when --episodic.", unit="loss weight",
                               lo=0, hi=1e6)
    model: dict = field(default_factory=dict)  # MusicGenreMoEConfig overrides (from the MODEL_FLAGS)


# With --data-dir (real recordings) these model defaults replace the config's, on the evidence of
# benchmarks/eval_real.py (README, "Measured figures"): the musicnn front end lifts 10-genre
# track-level CV accuracy on gtzan-mini-dev + gtzan-short-dev from 0.63 to 0.82 (excerpts 0.62 to
# 0.80), and 6-s windows let it hear every 3-s patch of a song. Synthetic clips keep frontend "none":
# the 59 features already separate them (0.99) at a fifth of the CPU per song.
REAL_DATA = {"frontend": "musicnn", "clip_seconds": 6.0}
# The few-shot space and score of a model with this front end (a flag given on the command line wins).
# musicnn: "musicnn embedding, L2-normalised, cosine", chosen in benchmarks/fewshot_eval.py's
# development direction (--swap: 0.802 / 0.924 at 1 / 5 shots against 0.751 / 0.889 for the 259
# z-scored inputs with Euclidean distance, the earlier default; cosine beat Euclidean in every musicnn
# space there; README, "Few-shot genres in the musicnn space"). Without a front end the config's
# defaults stay ("features", "euclidean").
FRONTEND_FEWSHOT = {"musicnn": {"prototype_space": "frontend_raw", "prototype_metric": "cosine"}}
QUICK = {"n_per_genre": 40, "epochs": 40, "patience": 20, "t_max": 40, "ema_decay": 0.98}  # fewer steps: a shorter average

# Model/loss settings exposed as flags; their defaults come from MusicGenreMoEConfig, their help here.
MODEL_FLAGS = {
    "routing_weight": dict(help="Weight of the routing loss (cross-entropy between gate and genre) that makes "
                                "expert i genre i's expert.", unit="loss weight", lo=0, hi=1e6),
    "load_balance_weight": dict(help="Weight of the Switch load-balance loss.", unit="loss weight", lo=0, hi=1e6),
    "entropy_weight": dict(help="Weight of the gate-entropy term (minus the entropy: it spreads the gate).",
                           unit="loss weight", lo=0, hi=1e6),
    "label_smoothing": dict(help="Label smoothing of the classification cross-entropy.", unit="probability",
                            lo=0, hi=1, hi_open=True),
    "gate_noise_std": dict(help="Standard deviation of the noise added to the gate logits while training.",
                           unit="logit", lo=0, hi=1e3),
    "num_experts_per_tok": dict(help="Experts kept per clip (sparse top-k gating), at most the number of "
                                     "genres; default: every expert (dense).", unit="experts", lo=1, hi=1024),
    "expert_type": dict(help="Expert layers: 'mlp' (residual MLP blocks) or 'kan' (Kolmogorov-Arnold, kan.py; "
                             "several times slower).", choices=("mlp", "kan")),
    "clip_seconds": dict(help="Window length: recordings are cut into windows of this length, one feature row "
                              "each.", unit="seconds", lo=1.0, hi=600),
    "frontend": dict(help="Pretrained front end under the experts: 'musicnn' adds each window's 200-d musicnn "
                          "embedding (frontend.py, frozen) to its 59 features; 'none' uses the features alone.",
                     choices=("none", "musicnn")),
    "prototype_space": dict(help="Where add_genre prototypes live: 'features' (the z-scored model input), "
                                 "'frontend' or 'frontend_raw' (the musicnn embedding, z-scored or as it is; "
                                 "need --frontend musicnn) or 'embedding' (the fused expert output); "
                                 "--frontend musicnn defaults to 'frontend_raw'.", choices=PROTOTYPE_SPACES),
    "prototype_metric": dict(help="How add_genre prototypes score a query: 'euclidean' (minus the squared "
                                  "distance) or 'cosine' (cosine similarity; prototypes are means of "
                                  "L2-normalised windows); with --frontend musicnn the default is 'cosine'.",
                             choices=PROTOTYPE_METRICS),
    "encoder_dropout": dict(help="Dropout after the shared encoder.", unit="probability", lo=0, hi=1, hi_open=True),
    "classifier_dropout": dict(help="Dropout in the classifier head.", unit="probability", lo=0, hi=1,
                               hi_open=True),
    "hidden_size": dict(help="Width of the shared encoder's output.", unit="units", lo=1, hi=65_536),
    "expert_hidden_size": dict(help="Width of each expert's residual blocks.", unit="units", lo=1, hi=65_536),
    "expert_output_size": dict(help="Width of each expert's output (the fused embedding).", unit="units",
                               lo=1, hi=65_536),
    "classifier_hidden_size": dict(help="Width of the classifier head's hidden layer.", unit="units",
                                   lo=1, hi=65_536),
    "gate_hidden_sizes": dict(help="Widths of the gate's two hidden layers, e.g. 64,32.", unit="units",
                              lo=1, hi=65_536),
}


# -- settings ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line naming the flag and the problem; the full usage is what --help is for.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_settings(argv=None):
    """CLI flags -> TrainSettings. Unknown flags and out-of-range values are errors (SystemExit 2)."""
    defaults = TrainSettings()
    config_defaults = MusicGenreMoEConfig()
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainSettings):
        if f.name == "model":
            continue
        default = getattr(defaults, f.name)
        _add_flag(p, f.name, f.type, default, f.metadata)
    for name, meta in MODEL_FLAGS.items():
        default = getattr(config_defaults, name)
        _add_flag(p, name, type(default) if default is not None else int, default, meta, model=True)
    ns = vars(p.parse_args(argv))
    model = {k: ns.pop(k) for k in MODEL_FLAGS}
    s = TrainSettings(**ns, model=model)
    given = {arg.split("=")[0] for arg in (sys.argv[1:] if argv is None else argv) if arg.startswith("--")}
    defaults_for = lambda table: {k: v for k, v in table.items() if "--" + k.replace("_", "-") not in given}  # noqa: E731
    if s.data_dir:  # real recordings: the evidence-based defaults, unless the flag was given
        s.model |= defaults_for(REAL_DATA)
    s.model |= defaults_for(FRONTEND_FEWSHOT.get(s.model["frontend"], {}))  # the front end's few-shot space
    if s.quick:  # quick mode lowers only what the user left at its default
        for k, v in QUICK.items():
            if getattr(s, k) == getattr(defaults, k):
                setattr(s, k, v)
    return s


def _add_flag(p, name, t, default, meta, model=False):
    flag = "--" + name.replace("_", "-")
    text = meta["help"]
    if meta.get("choices"):
        text += f" Choices: {', '.join(meta['choices'])}."
    if meta.get("unit"):
        text += f" Unit: {meta['unit']}."
    text += f" Default: {default}." + (" (model config)" if model else "")
    text = text.replace("%", "%%")
    if isinstance(default, bool):
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
    elif name == "data_dir":  # repeatable: --data-dir A --data-dir B
        p.add_argument(flag, action="append", type=_text, default=None, help=text, metavar="PATH")
    elif name == "ray":  # --ray alone means a local Ray
        p.add_argument(flag, nargs="?", const="local", type=_text, default=None, help=text, metavar="ADDRESS")
    elif meta.get("choices"):
        p.add_argument(flag, choices=meta["choices"], default=default, help=text)
    else:
        unit = meta.get("unit") or ""
        metavar = unit.upper() if unit.isalpha() else ("N" if t is int or default.__class__ is int else "X")
        p.add_argument(flag, type=_arg_type(t, name, meta), default=default, help=text, metavar=metavar)


def _arg_type(t, name, meta):
    if isinstance(t, types.UnionType):  # `int | None`: the flag takes the non-None type
        t = next(a for a in t.__args__ if a is not type(None))
    if name == "split":
        return _parse_split
    if t in (list, tuple):  # e.g. --gate-hidden-sizes 32,16
        return _checked(lambda text: [int(v) for v in text.split(",")], "comma-separated integers", meta)
    if t in (int, "int", "int | None"):
        return _checked(int, "an integer", meta)
    if t in (float, "float"):
        return _checked(float, "a number", meta)
    return _text


def _text(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text


def _checked(convert, what, meta):
    """An argparse type: `convert`, then the field's range (every element of a list)."""
    lo, hi = meta.get("lo"), meta.get("hi")

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        for v in value if isinstance(value, list) else [value]:
            if v != v or v in (float("inf"), float("-inf")):
                raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
            too_low = lo is not None and (v <= lo if meta.get("lo_open") else v < lo)
            too_high = hi is not None and (v >= hi if meta.get("hi_open") else v > hi)
            if too_low or too_high:
                left = "(" if meta.get("lo_open") else "["
                right = ")" if meta.get("hi_open") else "]"
                raise argparse.ArgumentTypeError(f"expected a value in {left}{lo}, {hi}{right}, got {text!r}")
        return value

    return parse


def _parse_split(text):
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 < v < float("inf") for v in parts):
        # A zero validation share leaves nothing to stop early on; a zero test share, nothing to report.
        raise argparse.ArgumentTypeError(f"expected three numbers > 0 (train,val,test), got {text!r}")
    return text


def check_out(out, overwrite):
    """Refuse an --out that names a file, or a non-empty folder without --overwrite, before any work."""
    out = Path(out)
    problem = unusable_output(out, overwrite)
    if problem == "not empty":
        raise SettingsError(f"--out {out} already holds files (a previous run?); pass --overwrite to replace it "
                            f"or choose another --out")
    if problem:
        raise SettingsError(f"--out {out} {problem}; expected a folder path")


def min_tracks_per_genre(split):
    """Recordings (synthetic: clips) a genre needs so that every part of the split gets one."""
    return sum(1 for v in split.split(",") if float(v) > 0)


def check_genres(genres, counts, s, what):
    """At least two genres, and enough recordings in each for the split (checked before extraction)."""
    if len(genres) < 2:
        raise SettingsError(f"{what}: found {len(genres)} genre ({', '.join(genres) or 'none'}); a classifier "
                            f"needs at least 2 genres")
    need = min_tracks_per_genre(s.split)
    short = {g: n for g, n in zip(genres, counts) if n < need}
    if short:
        listed = ", ".join(f"{g} has {n}" for g, n in short.items())
        raise SettingsError(f"{what}: {listed}; the train/val/test split --split {s.split} needs at least {need} "
                            f"recordings per genre (one in each part)")


def check_model(s, genres):
    """Build the model config from the flags and the genres: its own checks (e.g. top-k <= genres) run now."""
    try:
        return MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)},
                                   **s.model)
    except (ValueError, TypeError) as e:
        raise SettingsError(f"model flags: {e}") from e


# -- data -------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Feature rows with their genre and the recording (track) they came from."""

    features: np.ndarray   # (n_rows, 59) raw features
    labels: np.ndarray     # (n_rows,) genre index
    tracks: np.ndarray     # (n_rows,) track index; a synthetic clip is its own track
    track_names: list      # track index -> file path or "synthetic:<genre>:<i>"
    genres: list
    source: str            # "synthetic" or the data folder
    skipped: list          # (file, reason) for recordings that could not be read
    examples: dict         # genre -> one waveform, for the spectrogram figure


def load_dataset(s):
    """Check the data the flags name (before any extraction), then extract its features."""
    genres, paths, labels = list_data(s)
    if s.data_dir is None:
        return load_synthetic(s, genres)
    return load_folder(s, (paths, labels, genres))


def list_data(s):
    """(genres, paths, labels) of the run's data, refused up front when it cannot make a run.

    Synthetic data has no paths (None); its counts come from --n-per-genre.
    """
    if s.data_dir is None:
        from synth import GENRE_GENERATORS

        genres = _pick_genres(list(GENRE_GENERATORS), s.genres)
        check_genres(genres, [s.n_per_genre] * len(genres), s, "--n-per-genre")
        return genres, None, None
    paths, labels, genres = list_recordings(s.data_dir, s.genres)
    check_genres(genres, np.bincount(labels, minlength=len(genres)).tolist(), s, f"--data-dir {', '.join(s.data_dir)}")
    return genres, paths, labels


def load_synthetic(s, genres=None):
    from synth import GENRE_GENERATORS, generate_dataset

    genres = genres or _pick_genres(list(GENRE_GENERATORS), s.genres)
    clips, labels = generate_dataset(s.n_per_genre, seed=s.seed, genres=genres, sr=SAMPLE_RATE)
    # One row per synthetic clip (each is about one window long), as the seed did.
    result = extract_many(clips, sr=SAMPLE_RATE, n_jobs=s.n_jobs, cache_dir=_cache(s), frontend=s.model["frontend"])
    if result.failures:
        raise RuntimeError(f"synthetic clips failed feature extraction: {result.failures[:3]}")
    feats = np.concatenate(result.features).astype(np.float32)
    labels = np.asarray(labels)[result.ok]
    examples = {g: clips[int(np.flatnonzero(np.asarray(labels) == i)[0])] for i, g in enumerate(genres)}
    names = [f"synthetic:{genres[l]}:{i}" for i, l in enumerate(labels)]
    return Dataset(feats, labels, np.arange(len(labels)), names, genres, "synthetic", [], examples)


def _audio_files(folder):
    # Regular files only, and no hidden ones (macOS "._x.wav" resource forks are not audio).
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS
                  and f.is_file() and not f.name.startswith("."))


def _genre_folders(root):
    """A data folder's genre sub-folder names, or a SettingsError saying what is wrong with it."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise FileNotFoundError(f"--data-dir {root} {what}; expected layout {LAYOUT}")
    available = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not available:
        loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS]
        found = f"holds {len(loose)} audio files but no genre sub-folders" if loose else "has no genre sub-folders"
        raise SettingsError(f"--data-dir {root} {found}; expected layout {LAYOUT}")
    return available


def list_recordings(data_dirs, genres=None):
    """(paths, genre indices, genres) for one or more folders holding one sub-folder of recordings per genre.

    Several folders merge by genre name: `rock/` of every folder is one genre.
    """
    roots = [Path(d).expanduser() for d in ([data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else data_dirs)]
    folders = {root: _genre_folders(root) for root in roots}
    genres = _pick_genres(sorted(set().union(*folders.values())), genres)
    paths, labels = [], []
    for i, g in enumerate(genres):
        files = [f for root in roots if g in folders[root] for f in _audio_files(root / g)]
        if not files:
            raise SettingsError(f"--data-dir {', '.join(map(str, roots))}: sub-folder {g}/ holds no audio files "
                                f"({', '.join(AUDIO_EXTENSIONS)}); expected layout {LAYOUT}")
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels), genres


def window_rows(result, labels):
    """An extraction's windows as rows, one track per readable recording (numbered in `result.ok` order).

    `labels` holds the genre index of every source given to `extract_many`. Returns (features
    (n_windows, width) float32, genre index per row, track index per row).
    """
    counts = [len(f) for f in result.features]
    rows_label = np.repeat(np.asarray(labels)[np.asarray(result.ok, dtype=int)], counts)
    return np.concatenate(result.features).astype(np.float32), rows_label, np.repeat(np.arange(len(counts)), counts)


def data_roots(data):
    """The data folders a Dataset of recordings came from (its `source`, os.pathsep-joined)."""
    return [Path(p) for p in data.source.split(os.pathsep)]


def load_folder(s, listed=None):
    paths, labels, genres = listed or list_recordings(s.data_dir, s.genres)
    clip_seconds = s.model["clip_seconds"]
    if s.ray is None:
        result = extract_many(paths, sr=SAMPLE_RATE, clip_seconds=clip_seconds, n_jobs=s.n_jobs, cache_dir=_cache(s),
                              frontend=s.model["frontend"])
    else:  # the same result, computed by Ray workers (one machine or a cluster)
        from ray_backend import extract_many_ray

        result = extract_many_ray(paths, sr=SAMPLE_RATE, clip_seconds=clip_seconds, cache_dir=_cache(s),
                                  address=None if s.ray == "local" else s.ray, frontend=s.model["frontend"])
    # Unreadable files drop out: the split must still find enough readable recordings per genre.
    readable = np.bincount(labels[np.asarray(result.ok, dtype=int)], minlength=len(genres)).tolist()
    try:
        check_genres(genres, readable, s, f"--data-dir {', '.join(s.data_dir)} (readable recordings)")
    except SettingsError as e:
        raise SettingsError(f"{e}; skipped: {result.failures[:3]}") from None
    feats, rows_label, rows_track = window_rows(result, labels)
    names = [str(paths[idx]) for idx in result.ok]
    examples = {}
    for i, g in enumerate(genres):
        first = next((paths[k] for k in result.ok if labels[k] == i), None)
        if first is not None:
            examples[g] = load_audio(first, sr=SAMPLE_RATE)[: int(clip_seconds * SAMPLE_RATE)]
    return Dataset(feats, rows_label, rows_track, names, genres, os.pathsep.join(str(Path(d).expanduser()) for d in s.data_dir),
                   list(result.failures), examples)


def _pick_genres(available, wanted):
    if not wanted:
        return list(available)
    wanted = [g.strip() for g in wanted.split(",") if g.strip()]
    missing = [g for g in wanted if g not in available]
    if missing:
        raise SettingsError(f"--genres: {missing} not found; available: {available}")
    if len(set(wanted)) != len(wanted):
        raise SettingsError(f"--genres: {wanted} names a genre twice")
    return wanted


def _cache(s):
    return False if s.cache_dir == "none" else s.cache_dir


def split_tracks(track_labels, proportions, seed):
    """Stratified, seeded split of tracks: returns (train, val, test) arrays of track indices.

    Each genre's tracks are shuffled and divided in the given proportions (at least one track for
    training); with proportions 120,30,30 and 180 clips per genre that is exactly 120/30/30. A
    non-zero validation or test share gets at least one track of a genre that has three or more
    (round() alone would give 3 recordings x 30/180 = 0, leaving nothing to stop early on).
    """
    rng = np.random.default_rng(seed)
    w = np.asarray(proportions, dtype=float) / np.sum(proportions)
    parts = ([], [], [])
    for g in np.unique(track_labels):
        tracks = rng.permutation(np.flatnonzero(track_labels == g))
        n = len(tracks)
        n_val, n_test = int(round(n * w[1])), int(round(n * w[2]))
        n_val, n_test = max(n_val, int(w[1] > 0)), max(n_test, int(w[2] > 0))
        if n - n_val - n_test < 1:
            n_val, n_test = max(0, min(n_val, n - 1 - n_test)), min(n_test, n - 1)
        parts[1].extend(tracks[:n_val])
        parts[2].extend(tracks[n_val:n_val + n_test])
        parts[0].extend(tracks[n_val + n_test:])
    return tuple(np.sort(np.asarray(p, dtype=int)) for p in parts)


def feature_stats(x):
    """Per-input mean and std of the training rows (x: (rows, 59) or (rows, 59 + embedding)).

    A constant feature among the 59 gets std 1 (no blow-up). The front end's embedding units are
    ReLU outputs: on a small training set some are zero almost everywhere yet fire on other music,
    where a tiny std would turn them into z-scores in the millions. Their std is floored at a tenth
    of the embedding's median std, which keeps every unit on one scale.
    """
    mean, std = x.mean(0), x.std(0)
    std = np.where(std < 1e-8, 1.0, std)
    if x.shape[1] > N_FEATURES:
        emb = std[N_FEATURES:]
        std[N_FEATURES:] = np.maximum(emb, 0.1 * np.median(emb))
    return mean, std


@dataclass
class Splits:
    """A dataset split by track, with the training split's stats and the rows as tensors."""

    tracks: tuple      # (train, val, test) arrays of track indices
    rows: list         # (train, val, test) arrays of row indices into data.features
    mean: np.ndarray   # (num_features,) training rows' mean
    std: np.ndarray    # (num_features,) training rows' std (constant features: 1)
    tensors: list      # (train, val, test) pairs (raw features float32 tensor, labels long tensor)


def prepare_splits(data, s):
    """Split `data` by track as `s.split` and `s.seed` say; stats of the training rows; tensors.

    The tensors hold raw features: the model z-scores them with the stats in its config.
    """
    track_labels = np.asarray([data.labels[data.tracks == t][0] for t in range(len(data.track_names))])
    tracks = split_tracks(track_labels, [float(v) for v in s.split.split(",")], s.seed)
    if any(len(part) == 0 for part in tracks):
        raise SettingsError(f"--split {s.split}: expected at least one training, one validation and one test "
                            f"track, got {'/'.join(str(len(p)) for p in tracks)}")
    rows = [np.flatnonzero(np.isin(data.tracks, part)) for part in tracks]
    mean, std = feature_stats(data.features[rows[0]])
    tensors = [(torch.from_numpy(data.features[r]).float(), torch.from_numpy(data.labels[r]).long()) for r in rows]
    return Splits(tracks, rows, mean.astype(np.float32), std.astype(np.float32), tensors)


def input_names(config):
    """(names, groups) of the model's input columns: the 59 features, then the front end's units."""
    extra = [f"{config.frontend}_{i}" for i in range(config.frontend_size)]
    groups = dict(FEATURE_GROUPS)
    if extra:
        groups[config.frontend] = list(range(N_FEATURES, N_FEATURES + len(extra)))
    return list(FEATURE_NAMES) + extra, groups


def build_model(genres, mean, std, s):
    """A fresh MusicGenreMoE for `genres` from the settings' model flags, with the training stats."""
    try:
        config = MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)},
                                     feature_mean=[float(v) for v in mean], feature_std=[float(v) for v in std],
                                     **s.model)
    except (ValueError, TypeError) as e:
        raise SettingsError(f"model flags: {e}") from e
    model = MusicGenreMoE(config)
    if config.frontend != "none":  # a new model's front end starts from the pretrained weights
        model.load_pretrained_frontend()
    return model


# -- training ---------------------------------------------------------------------------------------


def run_epoch(model, x, y, optimiser=None, batch_size=64, grad_clip=1.0, generator=None, proto_weight=0.0,
              ema=None):
    """One pass over (x, y); trains when an optimiser is given. Returns mean loss terms and accuracy.

    `ema` (a `torch.optim.swa_utils.AveragedModel`) is updated after every optimiser step.

    `proto_weight > 0` adds `proto_weight * fewshot.batch_prototypical_loss` of the fused embeddings
    (each minibatch an episode, leave-one-out prototypes) to the loss, as `proto_loss`.
    """
    train = optimiser is not None
    model.train(train)
    order = torch.randperm(len(x), generator=generator) if train else torch.arange(len(x))
    sums, correct = {}, 0
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        with torch.set_grad_enabled(train):
            out = model(x[idx], labels=y[idx])
            loss = out.loss
            if proto_weight:
                proto = batch_prototypical_loss(out.embedding, y[idx])
                loss = loss + proto_weight * proto
                sums["proto_loss"] = sums.get("proto_loss", 0.0) + proto.item() * len(idx)
        if train:
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimiser.step()
            if ema is not None:
                ema.update_parameters(model)
        for k in ("ce_loss", "routing_loss", "load_balance_loss", "entropy_loss", "kan_reg_loss"):
            sums[k] = sums.get(k, 0.0) + out[k].item() * len(idx)
        sums["loss"] = sums.get("loss", 0.0) + loss.item() * len(idx)
        correct += (out.logits.argmax(1) == y[idx]).sum().item()
    return {k: v / len(x) for k, v in sums.items()} | {"acc": correct / len(x)}


def fit(model, train, val, s, log=print, epochs=None):
    """AdamW + cosine annealing + gradient clipping + early stopping on validation loss.

    With `s.ema_decay > 0` an exponential moving average of the weights (updated every step) is
    what gets validated, early-stopped and returned: it smooths the step-to-step noise of small
    batches, and on ten development seeds of synthetic data (seeds 100-109, never the reported
    ones) it cut test errors from 7 to 5 of 1,500 clips. `val=None` trains for exactly `epochs`
    (default `s.epochs`) epochs without early stopping (a refit on all data for a chosen count).

    Returns (history, best_epoch); the model is left holding the best validation-loss weights
    (or the final ones when `val` is None).
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    epochs = s.epochs if epochs is None else epochs
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.t_max, eta_min=s.eta_min)
    gen = torch.Generator().manual_seed(s.seed)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(s.ema_decay), use_buffers=True) if s.ema_decay else None
    evaluated = ema.module if ema is not None else model
    proto = s.proto_weight if s.episodic else 0.0
    history, best, best_epoch, best_state, waited = {}, float("inf"), epochs, None, 0
    for epoch in range(1, epochs + 1):
        tr = run_epoch(model, *train, optimiser=opt, batch_size=s.batch_size, grad_clip=s.grad_clip, generator=gen,
                       proto_weight=proto, ema=ema)
        sched.step()
        for k, v in tr.items():
            history.setdefault(f"train_{k}", []).append(v)
        if val is None:
            continue
        va = run_epoch(evaluated, *val, batch_size=512, proto_weight=proto)
        for k, v in va.items():
            history.setdefault(f"val_{k}", []).append(v)
        if va["loss"] < best - 1e-6:
            best, best_epoch, waited = va["loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        else:
            waited += 1
        if epoch == 1 or epoch % 10 == 0:
            log(f"epoch {epoch:3d}  train loss {tr['loss']:.4f} acc {tr['acc']:.3f}  "
                f"val loss {va['loss']:.4f} acc {va['acc']:.3f}  lr {sched.get_last_lr()[0]:.2e}")
        if waited >= s.patience:
            log(f"early stop at epoch {epoch}: no validation-loss improvement for {s.patience} epochs "
                f"(best epoch {best_epoch})")
            break
    if best_state is None:  # no validation data: the final (averaged) weights
        best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
    model.load_state_dict(best_state)
    return history, best_epoch


# -- evaluation -------------------------------------------------------------------------------------


def model_inputs(sp):
    """The split tensors as the model takes them: raw features, which it z-scores with the stats in
    its config (`build_model` puts the training split's there), so training, evaluation and every
    later caller feed the model the same way."""
    return sp.tensors


@torch.no_grad()
def infer(model, x):
    """(logits, probs, gate weights, embeddings) as numpy arrays, in eval mode."""
    model.eval()
    out = model(x)
    return out.logits.numpy(), out.logits.softmax(-1).numpy(), out.gate_weights.numpy(), out.embedding.numpy()


def input_gradient_importance(model, x, y):
    """(num_features,) mean |d logit(true genre) / d z| over the rows, z the z-scored feature.

    The model takes raw features; the gradient per raw feature is multiplied by that feature's
    training std (d/dz = std * d/dx), so that features measured in Hz and in unit-less ratios are
    compared per standard deviation rather than per unit.
    """
    model.eval()
    x = x.clone().requires_grad_(True)
    logits = model(x).logits
    logits.gather(1, y[:, None]).sum().backward()
    # The model takes raw features: scale each gradient by its feature's training std (d/dz = std * d/dx).
    grad = x.grad.abs() * torch.as_tensor(model.config.feature_std, dtype=x.grad.dtype)
    return grad.mean(0).numpy()


def evaluate(model, data, splits, inputs, genres):
    """Every test figure of the run (window level, plus track level for recordings).

    `splits`: (train, val, test) track indices; `inputs`: the (features, labels) tensors of each
    split as `model_inputs` gives them.
    """
    (x_val, y_val), (x_test, y_test) = inputs[1], inputs[2]
    val_logits, *_ = infer(model, x_val)
    logits, probs, gates, _ = infer(model, x_test)
    y = y_test.numpy()
    m = evaluation.classification_metrics(y, probs, genres)
    sa = evaluation.self_activation(y, gates, genres)
    metrics = {
        "test_accuracy": m["accuracy"], "test_accuracy_ci95": m["accuracy_ci95"], "macro_f1": m["macro_f1"],
        "test_n": len(y), "test_correct": int((probs.argmax(1) == y).sum()),
        "per_genre": m["per_genre"], "confusion_matrix": m["confusion_matrix"],
        "self_activation": sa, "mean_self_activation": float(np.mean(list(sa.values()))),
        "specialisation": evaluation.specialisation(y, gates),
        "expert_usage": evaluation.expert_usage(gates, genres),
        "calibration": evaluation.calibration(y_val.numpy(), val_logits, y, logits),
    }
    test_rows = np.flatnonzero(np.isin(data.tracks, splits[2]))
    if data.source != "synthetic":
        uniq, t_probs, t_gates = evaluation.track_average(data.tracks[test_rows], probs, gates)
        t_labels = np.asarray([data.labels[data.tracks == t][0] for t in uniq])
        tm = evaluation.classification_metrics(t_labels, t_probs, genres)
        metrics["track_level"] = {"test_accuracy": tm["accuracy"], "test_accuracy_ci95": tm["accuracy_ci95"],
                                  "macro_f1": tm["macro_f1"], "n_tracks": len(uniq),
                                  "n_correct": int((t_probs.argmax(1) == t_labels).sum()),
                                  "confusion_matrix": tm["confusion_matrix"],
                                  "self_activation": evaluation.self_activation(t_labels, t_gates, genres)}
    return metrics, (y, probs, gates, logits, val_logits)


# -- the run ----------------------------------------------------------------------------------------


def main(argv=None, log=print):
    """Train, evaluate and write the run folder. Returns the metrics dict (also in metrics.json).

    Every flag and the data it names are checked before any feature extraction. The run is built
    in a hidden sibling of --out and renamed into place when complete, so --out never holds half a
    run or figures of another run; partial folders of killed runs are removed here.
    """
    s = parse_settings(argv)
    t0 = time.perf_counter()
    timings = {}
    out = Path(s.out)
    check_out(out, s.overwrite)
    genres, paths, labels = list_data(s)
    check_model(s, genres)
    try:
        clean_stale_partials(out.parent, RUN_KIND)
        tmp = partial_folder(out, RUN_KIND)
    except OSError as e:
        raise SettingsError(f"--out {out}: cannot create the run folder there ({e.strerror or e})") from e
    try:
        torch.manual_seed(s.seed)
        data = load_synthetic(s, genres) if s.data_dir is None else load_folder(s, (paths, labels, genres))
        timings["data_and_features_s"] = time.perf_counter() - t0
        for path, reason in data.skipped:
            log(f"skipped {path}: {reason}")
        metrics = train_and_write(tmp, data, s, timings, t0, log)
        try:
            check_out(out, s.overwrite)  # another process may have written --out meanwhile
        except SettingsError:
            # Neither the finished run nor what appeared in --out may be lost: keep ours beside it.
            kept = out.with_name(f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            os.rename(tmp, kept)
            raise SettingsError(f"--out {out} was filled by someone else during training; this run was kept "
                                f"in {kept}") from None
        move_into_place(tmp, out, RUN_KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"run written to {out.resolve()}")
    return metrics


def train_and_write(folder, data, s, timings, t0, log=print):
    """Everything after the features: split, train, evaluate, save and plot into `folder`."""
    genres = data.genres
    sp = prepare_splits(data, s)
    log(f"data: {'synthetic' if data.source == 'synthetic' else '+'.join(r.name for r in data_roots(data))}, {len(genres)} genres, "
        f"tracks train/val/test {'/'.join(str(len(p)) for p in sp.tracks)}, "
        f"windows {'/'.join(str(len(r)) for r in sp.rows)}")
    model = build_model(genres, sp.mean, sp.std, s)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters, {model.config.expert_type} experts")
    inputs = model_inputs(sp)
    t1 = time.perf_counter()
    history, best_epoch = fit(model, inputs[0], inputs[1], s, log=log)
    timings["training_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    metrics, (y, probs, gates, logits, val_logits) = evaluate(model, data, sp.tracks, inputs, genres)
    model.set_genre_prototypes(torch.from_numpy(data.features[sp.rows[0]]), data.labels[sp.rows[0]])
    metrics |= {
        "n_parameters": n_params, "best_epoch": best_epoch, "epochs_run": len(history["train_loss"]),
        "dataset": dataset_summary(data, s, sp),
        "train_args": public_settings(s),
    }
    save_run(folder, model, s, metrics, history, sp.mean, sp.std, genres)
    timings["evaluation_s"] = time.perf_counter() - t2
    if s.plots:
        t3 = time.perf_counter()
        write_figures(folder, model, data, inputs, history, best_epoch, metrics, (y, probs, gates, logits), genres, s)
        timings["figures_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    metrics["timings"] = timings
    write_json(folder / "metrics.json", metrics, indent=2)
    log(f"test accuracy {metrics['test_accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
        f"mean self-activation {metrics['mean_self_activation']:.3f}  ({timings['total_s']:.1f} s)")
    return metrics


def dataset_summary(data, s, sp):
    """What metrics.json says about the data: names relative to the data folder, no path of this machine."""
    synthetic = data.source == "synthetic"
    roots = [] if synthetic else data_roots(data)
    return {"name": "synthetic" if synthetic else "+".join(r.name for r in roots),
            "source": "synthetic" if synthetic else "data-dir",
            "genres": list(data.genres),
            "n_tracks": [len(p) for p in sp.tracks], "n_windows": [len(r) for r in sp.rows],
            "split": f"stratified by {'clip' if synthetic else 'recording'}, "
                     f"proportions {s.split} (train,val,test), seed {s.seed}",
            "skipped": [[_relative(p, roots), _relative_text(r, roots)] for p, r in data.skipped]}


def _relative(path, roots):
    """A recording's path relative to its data folder (prefixed with the folder's name when several)."""
    for root in roots:
        try:
            rel = Path(path).relative_to(root).as_posix()
        except ValueError:
            continue
        return rel if len(roots) == 1 else f"{root.name}/{rel}"
    return Path(path).name


def _relative_text(text, roots):
    """An error message with the data folders' absolute paths cut out (decoders name the file)."""
    for root in roots:
        for prefix in {str(root), str(root.resolve())}:
            text = text.replace(prefix + os.sep, "" if len(roots) == 1 else root.name + "/").replace(prefix, root.name)
    return text


def public_settings(s):
    """The settings as metrics.json publishes them: the data folder by name, no local paths."""
    args = dataclasses.asdict(s)
    args.pop("out")
    if args["data_dir"] is not None:
        args["data_dir"] = [Path(d).expanduser().name for d in args["data_dir"]]
    if args["cache_dir"] not in (None, "none"):
        args["cache_dir"] = "custom"
    if args["ray"] not in (None, "local"):
        args["ray"] = "cluster"  # not the cluster's address
    return args


def save_run(out, model, s, metrics, history, mean, std, genres):
    """The run's model files and records in `out`, each written atomically.

    `moe_genre_checkpoint.pt` holds only tensors and plain Python types (weights, config as a dict,
    stats as tensors, genres, settings), so `torch.load(..., weights_only=True)` reads it.
    `hf_model/` is written by the Hub export's own function: AutoModel and pipeline load it as is.
    """
    out = Path(out)
    state = model.state_dict()
    with replacing(out / "moe_genre_model.pt") as tmp:
        torch.save(state, tmp)
    config = json.loads(model.config.to_json_string())  # plain JSON types only
    with replacing(out / "moe_genre_checkpoint.pt") as tmp:
        torch.save({"model_state_dict": state, "config": config,
                    "feat_mean": torch.as_tensor(np.asarray(mean, np.float32)),
                    "feat_std": torch.as_tensor(np.asarray(std, np.float32)),
                    "genres": [str(g) for g in genres], "train_args": json.loads(json.dumps(dataclasses.asdict(s)))},
                   tmp)
    hf_tmp = partial_folder(out / "hf_model", RUN_KIND)
    try:
        upload_to_hub.write_model_folder(model, hf_tmp)
        move_into_place(hf_tmp, out / "hf_model", RUN_KIND)
    except BaseException:
        shutil.rmtree(hf_tmp, ignore_errors=True)
        raise
    write_json(out / "train_args.json", dataclasses.asdict(s), indent=2)
    write_json(out / "history.json", history)
    write_json(out / "metrics.json", metrics, indent=2)
    write_text(out / "classification_report.txt", classification_report(metrics, genres))


def classification_report(metrics, genres):
    lines = [f"{'genre':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'roc_auc':>10}{'self_act':>10}{'support':>9}"]
    for g in genres:
        r = metrics["per_genre"][g]
        lines.append(f"{g:<12}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1']:>10.3f}{r['roc_auc']:>10.3f}"
                     f"{metrics['self_activation'][g]:>10.3f}{r['support']:>9d}")
    lo, hi = metrics["test_accuracy_ci95"]
    lines += ["", f"accuracy {metrics['test_accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f})   macro F1 {metrics['macro_f1']:.4f}"]
    if "track_level" in metrics:
        t = metrics["track_level"]
        lines.append(f"track level ({t['n_tracks']} recordings): accuracy {t['test_accuracy']:.4f} "
                     f"(95% CI {t['test_accuracy_ci95'][0]:.3f}-{t['test_accuracy_ci95'][1]:.3f})  macro F1 {t['macro_f1']:.4f}")
    skipped = metrics.get("dataset", {}).get("skipped", [])
    if skipped:
        lines += ["", f"skipped {len(skipped)} unreadable recording(s):"] + [f"  {p}: {r}" for p, r in skipped]
    return "\n".join(lines) + "\n"


def write_figures(out, model, data, inputs, history, best_epoch, metrics, test, genres, s):
    y, probs, gates, logits = test
    gm = evaluation.gate_matrix(y, gates, len(genres))
    plots.genre_spectrograms(data.examples, SAMPLE_RATE, out / "genre_spectrograms.png")
    plots.training_curves(history, best_epoch, out / "training_curves.png", ema_decay=s.ema_decay)
    t = metrics.get("track_level")  # the matrix counts windows; say so where they are not whole clips
    unit = (f"{metrics['test_n']} windows of {t['n_tracks']} recordings" if t else f"{metrics['test_n']} clips")
    plots.confusion_matrix(metrics["confusion_matrix"], genres, out / "confusion_matrix.png",
                           title=f"Test confusion matrix ({unit})")
    plots.expert_gates(gm, metrics["self_activation"], genres, out / "expert_gates.png")
    plots.roc_curves(y, probs, genres, out / "roc_curves.png")
    plots.radar_charts(gm, genres, out / "radar_charts.png")
    importance = input_gradient_importance(model, *inputs[2])
    names, groups = input_names(model.config)
    plots.feature_importance(importance, names, groups, out / "feature_importance.png")
    cal = metrics["calibration"]
    centres, acc, counts = evaluation.reliability_curve(y, probs)
    _, acc_t, _ = evaluation.reliability_curve(y, evaluation.softmax(logits, cal["temperature"]))
    plots.reliability_diagram(centres, acc, counts, acc_t, cal["temperature"], out / "calibration.png")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, ValueError) as e:  # expected failures: one line, no traceback
        sys.exit(f"error: {e}")
