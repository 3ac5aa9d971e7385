"""train.py's settings: every flag with its one default, and the rule that resolves them.

A flag given on the command line always wins. A flag left out takes, in order: the real-data
default (REAL_DATA, with --data-dir), the quick-mode default (QUICK, with --quick), the front end's
few-shot default (FRONTEND_FEWSHOT), then the TrainSettings or MusicGenreMoEConfig default. Every
flag's argparse default is None, so "was it given" is read from the parsed values, never from argv.
"""

import argparse
import dataclasses
import types
from pathlib import Path
from dataclasses import dataclass, field

from configuration import DECISIONS, PROTOTYPE_METRICS, PROTOTYPE_SPACES, MusicGenreMoEConfig

LAYOUT = "DIR/<genre>/<audio files>, one sub-folder of recordings per genre (GTZAN's layout)"


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
    allow_duplicates: bool = _opt(False, "Train although the same audio (same bytes, by content hash) sits in "
                                  "two genre folders or twice in one; without it such data is refused, since a copy "
                                  "on both sides of the split inflates the test score.")
    data_dir: list | None = _opt(None, "Folder of your own recordings laid out as " + LAYOUT + "; give it more "
                                 "than once to merge folders by genre name; without it the model trains on "
                                 "synthetic audio.", unit="path")
    artists: list | None = _opt(None, "CSV of each recording's artist (columns file and artist, file relative to "
                                "the CSV's folder; repeatable): genre centroids count every artist once, and the "
                                "novelty threshold is calibrated in folds by artist (default: each recording is "
                                "its own artist).", unit="path")
    genres: str | None = _opt(None, "Comma-separated subset of the genres to train on, at least two "
                              "(default: every genre).", unit="names")
    dataset: str | None = _opt(None, "Train from a Hugging Face datasets dataset instead of --data-dir: a Hub id "
                               "(e.g. marsyas/gtzan, needs a network), a save_to_disk folder or an audiofolder "
                               "directory; split by recording like folders.", unit="name")
    audio_column: str | None = _opt(None, "With --dataset: the audio column (default: the first Audio column, "
                                    "or 'audio').", unit="name")
    label_column: str | None = _opt(None, "With --dataset: the genre column (default: the first ClassLabel "
                                    "column, or 'label', or 'genre').", unit="name")
    dataset_split: str | None = _opt(None, "With --dataset: the dataset's split(s) to use, joined by '+' (e.g. "
                                     "train+test; default: every split, as --split makes its own).", unit="names")
    labels: str = _opt("folders", "Where --data-dir recordings get their genre: 'folders' (the genre sub-folder "
                       "names) or 'tags' (each file's own genre tag, any folder layout: normalised, so 'Hip-Hop' "
                       "and 'hip hop' are 'hiphop'; --genres chooses which to learn; recordings without a usable "
                       "tag are listed and skipped; a genre with too few songs is refused with the counts).",
                       choices=("folders", "tags"))
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
    cache_dir: str | None = _opt(None, "Feature cache folder (default: workbench.batch's own); 'none' disables "
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
# the 59 features already separate them (0.99) at a fifth of the CPU per song. The decision is the
# nearest artist-weighted genre centroid: on artist-grouped folds (benchmarks/eval_real.py, seed 0)
# it names 269/350 GTZAN recordings against the MoE head's 260, 39/60 of another collection's
# (emotify-dev) against 33, and 323/430 of both against 296 (README, "Hearing genres, not artists").
REAL_DATA = {"frontend": "musicnn", "clip_seconds": 6.0, "decision": "centroids"}
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
    "decision": dict(help="What names a song's genre: 'classifier' (the MoE head), 'centroids' (the nearest "
                          "artist-weighted genre centroid, cosine) or 'blend' (their mean); with --data-dir the "
                          "default is 'centroids'.", choices=DECISIONS),
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


def parse_settings(argv=None, description=None):
    """CLI flags -> TrainSettings. Unknown flags and out-of-range values are errors (SystemExit 2).

    Every flag's argparse default is None: what is not None was given, and wins over every
    default (see the module docstring for the order of the defaults).
    """
    defaults = TrainSettings()
    config_defaults = MusicGenreMoEConfig()
    p = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    for f in dataclasses.fields(TrainSettings):
        if f.name != "model":
            _add_flag(p, f.name, f.type, getattr(defaults, f.name), f.metadata)
    for name, meta in MODEL_FLAGS.items():
        default = getattr(config_defaults, name)
        _add_flag(p, name, type(default) if default is not None else int, default, meta, model=True)
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    resolved = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainSettings) if f.name != "model"}
    resolved |= {name: getattr(config_defaults, name) for name in MODEL_FLAGS}
    if given.get("quick"):
        resolved |= QUICK
    if given.get("data_dir") or given.get("dataset"):
        resolved |= REAL_DATA
    resolved |= FRONTEND_FEWSHOT.get(given.get("frontend", resolved["frontend"]), {})
    resolved |= given
    return TrainSettings(**{k: v for k, v in resolved.items() if k not in MODEL_FLAGS},
                         model={k: resolved[k] for k in MODEL_FLAGS})


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
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif name in ("data_dir", "artists"):  # repeatable: --data-dir A --data-dir B
        p.add_argument(flag, action="append", type=_text, default=None, help=text, metavar="PATH")
    elif name == "ray":  # --ray alone means a local Ray
        p.add_argument(flag, nargs="?", const="local", type=_text, default=None, help=text, metavar="ADDRESS")
    elif meta.get("choices"):
        p.add_argument(flag, choices=meta["choices"], default=None, help=text)
    else:
        unit = meta.get("unit") or ""
        metavar = unit.upper() if unit.isalpha() else ("N" if t is int or default.__class__ is int else "X")
        p.add_argument(flag, type=_arg_type(t, name, meta), default=None, help=text, metavar=metavar)


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


def check_model(s, genres):
    """Build the model config from the flags and the genres: its own checks (e.g. top-k <= genres) run now."""
    try:
        return MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)},
                                   **s.model)
    except (ValueError, TypeError) as e:
        raise SettingsError(f"model flags: {e}") from e



def public_settings(s):
    """The settings as metrics.json publishes them: the data folder by name, no local paths."""
    args = dataclasses.asdict(s)
    args.pop("out")
    if args["data_dir"] is not None:
        args["data_dir"] = [Path(d).expanduser().name for d in args["data_dir"]]
    if args.get("dataset") and Path(args["dataset"]).expanduser().exists():  # a local folder: its name only
        args["dataset"] = Path(args["dataset"]).expanduser().name
    if args["artists"] is not None:
        args["artists"] = [Path(a).expanduser().name for a in args["artists"]]
    if args["cache_dir"] not in (None, "none"):
        args["cache_dir"] = "custom"
    if args["ray"] not in (None, "local"):
        args["ray"] = "cluster"  # not the cluster's address
    return args


