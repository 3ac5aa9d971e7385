"""Configuration of the music-genre Mixture-of-Experts model.

Every architecture, loss and preprocessing setting lives here, so a saved model (`config.json`)
carries everything needed to rebuild it and to turn audio into the features it was trained on.
"""

import math
import re

from transformers import PretrainedConfig

try:
    from .features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE
    from .frontend import EMBEDDING_SIZE
    from .prototypes import PROTOTYPE_METRICS
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE
    from frontend import EMBEDDING_SIZE
    from prototypes import PROTOTYPE_METRICS

#: Where few-shot prototypes can live (see the `prototype_space` argument).
PROTOTYPE_SPACES = ("features", "frontend", "frontend_raw", "embedding")
#: What names a song's genre (see the `decision` argument).
DECISIONS = ("classifier", "centroids", "blend")
#: How a query is compared with the prototypes (see `prototype_metric`): PROTOTYPE_METRICS,
#: ("euclidean", "cosine"), imported above from prototypes.py, which holds the maths they name.
#: Front ends the model knows -> width of their per-window embedding.
FRONTEND_SIZES = {"none": 0, "musicnn": EMBEDDING_SIZE}

# The seed's five genres, in the seed's order. synth.GENRE_GENERATORS follows this order; a test
# keeps the two in step.
DEFAULT_GENRES = ("jazz", "blues", "rock", "pop", "classical")


class MusicGenreMoEConfig(PretrainedConfig):
    r"""
    Configuration for [`MusicGenreMoE`]. The defaults reproduce the seed notebook's architecture
    (about 175k parameters for five genres).

    Args:
        num_features (`int`, *optional*, defaults to 59):
            Width of the input feature vector (see `features.FEATURE_NAMES`).
        hidden_size (`int`, *optional*, defaults to 128):
            Width of the shared encoder's output, read by every expert and by the gate.
        expert_hidden_size (`int`, *optional*, defaults to 64):
            Width of each expert's residual blocks.
        expert_output_size (`int`, *optional*, defaults to 32):
            Width of each expert's output; the fused embedding has this width.
        num_expert_blocks (`int`, *optional*, defaults to 2):
            Residual (skip-connection) blocks per expert.
        gate_hidden_sizes (`list[int]`, *optional*, defaults to `[64, 32]`):
            Hidden widths of the 3-layer gating network.
        classifier_hidden_size (`int`, *optional*, defaults to 64):
            Hidden width of the classifier head.
        encoder_dropout (`float`, *optional*, defaults to 0.3):
            Dropout inside the shared encoder.
        classifier_dropout (`float`, *optional*, defaults to 0.15):
            Dropout inside the classifier head.
        gate_noise_std (`float`, *optional*, defaults to 1.0):
            Standard deviation of the Gaussian noise added to the gate logits in training only.
        num_experts_per_tok (`int` or `None`, *optional*, defaults to `None`):
            Sparse top-k gating: keep only the k largest gate weights (renormalised). `None` is dense.
        expert_type (`str`, *optional*, defaults to `"mlp"`):
            `"mlp"` (Linear layers) or `"kan"` (Kolmogorov-Arnold layers from `kan.py`) inside experts.
        kan_grid_size (`int`, *optional*, defaults to 5):
            Spline intervals of each KAN layer.
        kan_spline_order (`int`, *optional*, defaults to 3):
            B-spline order of each KAN layer.
        kan_basis (`str`, *optional*, defaults to `"bspline"`):
            Basis of each KAN layer: `"bspline"` or `"rbf"` (Gaussian radial basis, cheaper on CPU;
            see `kan.py` and `benchmarks/ablation_experts.py`).
        label_smoothing (`float`, *optional*, defaults to 0.1):
            Label smoothing of the cross-entropy term.
        load_balance_weight (`float`, *optional*, defaults to 0.05):
            Weight of the Switch-style load-balance term.
        entropy_weight (`float`, *optional*, defaults to 0.01):
            Weight of the gate-entropy term (the seed's "diversity" loss; it rewards spreading weight).
        routing_weight (`float`, *optional*, defaults to 0.5):
            Weight of the routing term: cross-entropy between the gate and the label, which ties expert
            i to genre i. Without it the gate has no reason to route by genre (see DESIGN.md).
        kan_reg_weight (`float`, *optional*, defaults to 1e-4):
            Weight of the KAN spline regulariser (used only when `expert_type="kan"`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Unused by the default init (PyTorch's Kaiming-uniform init trains this small network
            better); kept for transformers' tooling.
        feature_mean (`list[float]` or `None`, *optional*):
            Per-input mean of the training split, length `input_size` (the 59 features, then the
            front end's embedding if any). `None` until trained. Checked when built or loaded: finite.
        feature_std (`list[float]` or `None`, *optional*):
            Per-input standard deviation of the training split, length `input_size`; finite and > 0.
        sampling_rate (`int`, *optional*, defaults to 22050):
            Sample rate the features were computed at; audio is resampled to it.
        clip_seconds (`float`, *optional*, defaults to 5.0):
            Length of one analysis window. Songs are cut into windows of this length and the window
            predictions averaged: 5 s holds two to four bars at common tempi, enough for a stable
            tempo and chroma estimate, and gives six windows per 30-s GTZAN clip.
        frontend (`str`, *optional*, defaults to `"none"`):
            `"none"`: the model reads the 59 window features only. `"musicnn"`: each window also goes
            through the pretrained musicnn MSD network (`frontend.py`, Pons & Serra 2019; its weights
            live in the model's safetensors) and its 200-d penultimate embedding, averaged over the
            window's 3-s patches, joins the 59 features before the encoder (`input_size` 259).
        freeze_frontend (`bool`, *optional*, defaults to `True`):
            Keep the front end's weights fixed (and its batch norms in eval mode) while training: 25-300
            labelled recordings are far too few to fine-tune a 790k-parameter network.
        frontend_precision (`str`, *optional*, defaults to `"auto"`):
            Arithmetic of the front end at inference (`frontend.resolve_precision`): `"auto"` picks
            `"int8"` on CPUs with AVX-512 VNNI and BF16, `"bf16"` with BF16 only, else `"fp32"`;
            `"fp32"` is exact and the same on every machine (training inputs always use it). int8
            embeddings against fp32 (`benchmarks/bench_precision.py`): cosine >= 0.99925 on the 40
            reference patches, >= 0.99899 (mean 0.99977) on GTZAN mini-dev's 250 6-s windows with
            the same genre on all 50 recordings, >= 0.99811 on emotify-dev's 800 with the same
            genre on 79 of 80; bf16: >= 0.99962, >= 0.99951 and >= 0.99955.
        prototypes (`dict[str, list[float]]`, *optional*, defaults to `{}`):
            Few-shot genres added with `model.add_genre`: genre name -> mean of the examples'
            windows in the `prototype_space` (with `prototype_metric="cosine"`, the mean of the
            windows' L2-normalised vectors).
        prototype_space (`str`, *optional*, defaults to `"features"`):
            Where few-shot prototypes live: `"features"`, the z-scored model input (the 59 features,
            and the front end's embedding when there is one); `"frontend"`, the z-scored front-end
            embedding alone (needs a front end); `"frontend_raw"`, the front-end embedding as the
            front end gives it, not z-scored (needs a front end; with `prototype_metric="cosine"` it
            is the space chosen in benchmarks/fewshot_eval.py's development direction, "musicnn
            embedding, L2-normalised, cosine", and what train.py uses for musicnn models); or
            `"embedding"`, the fused expert embedding.
            Without a front end `"features"` names unseen genres far better than `"embedding"`
            (benchmarks/fewshot_eval.py on gtzan-mini-dev, 5-way 5-shot: 0.783 against 0.373 on
            the held-out genres): the routing term shapes the fused embedding into one direction per
            trained genre, which has no room for a new one. Prototypes made in one space are
            meaningless in another.
        prototype_metric (`str`, *optional*, defaults to `"euclidean"`):
            How queries are scored against prototypes (`prototypes.prototype_scores`): `"euclidean"`,
            minus the squared distance divided by the space's width; or `"cosine"`, the cosine
            similarity times `prototypes.COSINE_SCALE` (10: a softmax over raw cosines in [-1, 1] is
            nearly flat), with every window L2-normalised before prototypes are averaged. The
            default keeps configs saved before this argument existed scoring as they did; train.py
            picks `"cosine"` for musicnn models (README, "Few-shot genres in the musicnn space").
            Prototypes made with one metric should not be scored with the other.
        decision (`str`, *optional*, defaults to `"classifier"`):
            What names a song's genre: `"classifier"`, the MoE's head; `"centroids"`, the nearest
            genre centroid (cosine of the song's mean z-scored input to `genre_centroids`, scores
            times `prototypes.COSINE_SCALE` through a softmax); `"blend"`, the mean of the two
            probability vectors. Centroids and blend need `genre_centroids`. On artist-grouped folds
            of GTZAN the centroids name genres of unseen artists better than any trained head
            (README, "Hearing genres, not artists").
        genre_centroids (`dict[str, list[float]]`, *optional*, defaults to `{}`):
            Trained genre -> its centroid in the z-scored input space (`input_size` values): the mean
            over the genre's artists of their songs' mean input (`model.set_genre_centroids`).
        novelty_threshold (`float` or `None`, *optional*):
            A song whose novelty (1 minus its cosine to the nearest centroid) exceeds this is
            reported `known: False` ("none of these"). train.py sets it to the 90th percentile of
            out-of-fold novelty of the training songs (folds by artist); `None`: every song is known.
        id2label / label2id (`dict`, *optional*):
            The trained genres; defaults to `DEFAULT_GENRES`.
    """

    model_type = "music-genre-moe"

    def __init__(
        self,
        num_features=N_FEATURES,
        hidden_size=128,
        expert_hidden_size=64,
        expert_output_size=32,
        num_expert_blocks=2,
        gate_hidden_sizes=None,
        classifier_hidden_size=64,
        encoder_dropout=0.3,
        classifier_dropout=0.15,
        gate_noise_std=1.0,
        num_experts_per_tok=None,
        expert_type="mlp",
        kan_grid_size=5,
        kan_spline_order=3,
        kan_basis="bspline",
        label_smoothing=0.1,
        load_balance_weight=0.05,
        entropy_weight=0.01,
        routing_weight=0.5,
        kan_reg_weight=1e-4,
        initializer_range=0.02,
        feature_mean=None,
        feature_std=None,
        sampling_rate=SAMPLE_RATE,
        clip_seconds=CLIP_SECONDS,
        prototypes=None,
        prototype_space="features",
        prototype_metric="euclidean",
        decision="classifier",
        genre_centroids=None,
        novelty_threshold=None,
        frontend="none",
        freeze_frontend=True,
        frontend_precision="auto",
        **kwargs,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(DEFAULT_GENRES))
            kwargs["label2id"] = {g: i for i, g in enumerate(DEFAULT_GENRES)}
        self.num_features = int(num_features)
        self.hidden_size = hidden_size
        self.expert_hidden_size = expert_hidden_size
        self.expert_output_size = expert_output_size
        self.num_expert_blocks = num_expert_blocks
        self.gate_hidden_sizes = list(gate_hidden_sizes) if gate_hidden_sizes is not None else [64, 32]
        self.classifier_hidden_size = classifier_hidden_size
        self.encoder_dropout = encoder_dropout
        self.classifier_dropout = classifier_dropout
        self.gate_noise_std = gate_noise_std
        self.num_experts_per_tok = num_experts_per_tok
        self.expert_type = expert_type
        self.kan_grid_size = kan_grid_size
        self.kan_spline_order = kan_spline_order
        self.kan_basis = kan_basis
        self.label_smoothing = label_smoothing
        self.load_balance_weight = load_balance_weight
        self.entropy_weight = entropy_weight
        self.routing_weight = routing_weight
        self.kan_reg_weight = kan_reg_weight
        self.initializer_range = initializer_range
        if frontend not in FRONTEND_SIZES:
            raise ValueError(f"frontend must be one of {sorted(FRONTEND_SIZES)}, got {frontend!r}")
        self.frontend = frontend
        self.freeze_frontend = bool(freeze_frontend)
        if frontend_precision not in ("auto", "fp32", "bf16", "int8"):
            raise ValueError(f"frontend_precision must be 'auto', 'fp32', 'bf16' or 'int8', got {frontend_precision!r}")
        self.frontend_precision = frontend_precision
        self.feature_mean = _stats_list(feature_mean, "feature_mean", self.input_size)
        self.feature_std = _stats_list(feature_std, "feature_std", self.input_size)
        self.sampling_rate = int(sampling_rate)
        self.clip_seconds = float(clip_seconds)
        self.prototypes = {str(k): [float(x) for x in v] for k, v in (prototypes or {}).items()}
        self.prototype_space = prototype_space
        self.prototype_metric = prototype_metric
        self.decision = decision
        self.genre_centroids = {str(k): [float(x) for x in v] for k, v in (genre_centroids or {}).items()}
        self.novelty_threshold = None if novelty_threshold is None else float(novelty_threshold)
        super().__init__(**kwargs)
        self._validate()

    def _validate(self):
        if self.prototype_space not in PROTOTYPE_SPACES:
            raise ValueError(f"prototype_space must be one of {', '.join(map(repr, PROTOTYPE_SPACES))}, "
                             f"got {self.prototype_space!r}")
        if self.prototype_space in ("frontend", "frontend_raw") and self.frontend == "none":
            raise ValueError(f"prototype_space {self.prototype_space!r} needs a front end (frontend='musicnn'), "
                             "got frontend='none'")
        if self.prototype_metric not in PROTOTYPE_METRICS:
            raise ValueError(f"prototype_metric must be one of {', '.join(map(repr, PROTOTYPE_METRICS))}, "
                             f"got {self.prototype_metric!r}")
        width = {"features": self.input_size, "frontend": self.frontend_size, "frontend_raw": self.frontend_size,
                 "embedding": self.expert_output_size}[self.prototype_space]
        wrong = {name: len(v) for name, v in self.prototypes.items() if len(v) != width}
        if wrong:  # e.g. prototypes saved in the fused-embedding space by an older version
            raise ValueError(f"prototypes in prototype_space {self.prototype_space!r} must have {width} values, "
                             f"got {wrong}; set prototype_space to the space they were made in")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(map(repr, DECISIONS))}, got {self.decision!r}")
        if self.genre_centroids and set(self.genre_centroids) != set(self.genres):
            raise ValueError(f"genre_centroids must hold every genre {self.genres}, got {sorted(self.genre_centroids)}")
        short = {g: len(v) for g, v in self.genre_centroids.items() if len(v) != self.input_size}
        if short:
            raise ValueError(f"genre_centroids must have input_size={self.input_size} values each, got {short}")
        if self.novelty_threshold is not None and not 0 <= self.novelty_threshold <= 2:
            raise ValueError(f"novelty_threshold must be None or in [0, 2] (1 - cosine), got {self.novelty_threshold}")
        if self.expert_type not in ("mlp", "kan"):
            raise ValueError(f"expert_type must be 'mlp' or 'kan', got {self.expert_type!r}")
        if self.kan_basis not in ("bspline", "rbf"):
            raise ValueError(f"kan_basis must be 'bspline' or 'rbf', got {self.kan_basis!r}")
        k = self.num_experts_per_tok
        if k is not None and not 1 <= k <= self.num_labels:
            raise ValueError(f"num_experts_per_tok must be None or in [1, {self.num_labels}], got {k!r}")
        if len(self.gate_hidden_sizes) != 2:
            raise ValueError(f"gate_hidden_sizes must hold 2 widths (a 3-layer gate), got {self.gate_hidden_sizes!r}")

        for name in list(self.prototypes) + list(self.label2id):
            check_genre_name(name)

    @property
    def genres(self):
        """The trained genres in label order."""
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def frontend_size(self):
        """Width of the front end's embedding per window (0 without a front end)."""
        return FRONTEND_SIZES[self.frontend]

    @property
    def input_size(self):
        """Width of one window's model input: the 59 features, then the front end's embedding."""
        return self.num_features + self.frontend_size

    @property
    def has_feature_stats(self):
        return self.feature_mean is not None and self.feature_std is not None


def _stats_list(values, name, width):
    """Normalisation stats as a plain list of `width` finite floats (JSON-friendly), or None.

    Checked when the config is built or loaded, so a bad `config.json` fails there, naming the
    field, instead of giving NaN (or silently flipped signs) at prediction time.
    """
    if values is None:
        return None
    values = values.tolist() if hasattr(values, "tolist") else values
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a list of {width} numbers, got {type(values).__name__}: {e}") from None
    if len(values) != width:
        raise ValueError(f"{name} must hold {width} values (one per input feature), got {len(values)}")
    bad = [(i, v) for i, v in enumerate(values) if not math.isfinite(v) or (name == "feature_std" and v <= 0)]
    if bad:
        i, v = bad[0]
        need = "finite and > 0" if name == "feature_std" else "finite"
        raise ValueError(f"{name}[{i}] must be {need}, got {v} ({len(bad)} bad value(s))")
    return values


_GENRE_NAME = re.compile(r"[\w][\w &'.+-]{0,63}")


def check_genre_name(name):
    """A genre name as given, or ValueError: 1-64 characters (letters, digits, space, `-_&'.+`), not
    starting with a space or punctuation. It becomes a key of config.json and a label in outputs, so
    paths, control characters and empty names are refused."""
    if not isinstance(name, str) or not _GENRE_NAME.fullmatch(name):
        raise ValueError(f"genre name: expected 1-64 letters, digits, spaces or -_&'.+ (not starting with "
                         f"punctuation), got {name!r}")
    return name
