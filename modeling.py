"""The music-genre Mixture-of-Experts model.

Reads top-down: feature checks and normalisation, the blocks (shared encoder, `GenreExpert`,
`GatingNetwork`), the losses, then the full `MusicGenreMoE` with `forward`, `predict`,
`predict_audio` and few-shot `add_genre`.

    raw features (batch, 59) -> z-score with config.feature_mean/std -> shared encoder (batch, 128)
        -> experts: E x (batch, 32)      gate: (batch, E) softmax weights
        -> fused = sum_i gate_i * expert_i   (batch, 32)   (the genre embedding)
        -> classifier head -> logits (batch, num_genres)

A song's verdict (`song.song_verdict`) averages its windows' outputs (`window_outputs`) and names
the genre by `config.decision`: the head above, or the nearest artist-weighted genre centroid of
the song's mean z-scored input (`set_genre_centroids`; the default for recordings, chosen on
artist-grouped folds), which also gives its `novelty` ("none of these").
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

try:
    from .configuration import MusicGenreMoEConfig, check_genre_name
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from configuration import MusicGenreMoEConfig, check_genre_name

try:
    from .kan import KANLinear
    from .prototypes import COSINE_SCALE, artist_weighted_prototypes, class_prototypes, metric_space, prototype_scores
except ImportError:
    from kan import KANLinear
    from prototypes import COSINE_SCALE, artist_weighted_prototypes, class_prototypes, metric_space, prototype_scores

try:
    from .features import FEATURE_NAMES
    from .frontend import DEFAULT_WEIGHTS, MSD_TAGS, MUSICNN_N_MELS, PATCH_FRAMES, MusiCNN, patches_per_pass
    from .song import song_inputs, song_verdict, song_waveform
except ImportError:
    from features import FEATURE_NAMES
    from frontend import DEFAULT_WEIGHTS, MSD_TAGS, MUSICNN_N_MELS, PATCH_FRAMES, MusiCNN, patches_per_pass
    from song import song_inputs, song_verdict, song_waveform

#: Largest |z-score| accepted: features from real audio stay within a few dozen standard deviations
#: of the training mean; 1e30 would overflow float32 inside the network and come out as NaN.
MAX_ABS_ZSCORE = 1e4


# ----------------------------------------------------------------------------------------------
# Input checks and normalisation


def as_feature_tensor(features, num_features, name="input_features"):
    """Turn a (num_features,) or (batch, num_features) array, tensor or list into a float32 2-D tensor.

    Raises ValueError naming the expected and the received shape, or the position of a NaN/inf.
    """
    x = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features, dtype=np.float32))
    x = x.float()
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != num_features:
        raise ValueError(
            f"{name}: expected shape ({num_features},) or (batch, {num_features}), got {tuple(x.shape)}"
        )
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        row, col = (~finite).nonzero()[0].tolist()
        raise ValueError(
            f"{name}: expected finite values, got {x[row, col].item()} at row {row}, feature {col}"
        )
    return x


# ----------------------------------------------------------------------------------------------
# Blocks


def linear_layer(config, in_features, out_features, kan=False):
    """A Linear layer, or a Kolmogorov-Arnold layer of the same shape when `kan` is set."""
    if kan:
        return KANLinear(
            in_features, out_features, grid_size=config.kan_grid_size, spline_order=config.kan_spline_order,
            basis=getattr(config, "kan_basis", "bspline"),  # configs saved before kan_basis existed
        )
    return nn.Linear(in_features, out_features)


class SharedEncoder(nn.Module):
    """Linear(input_size->128) -> LayerNorm -> GELU -> Dropout -> Linear(128->128) -> LayerNorm -> GELU.

    input_size is 59 (the window features) or 259 (with the musicnn embedding)."""

    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.net = nn.Sequential(
            nn.Linear(config.input_size, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(config.encoder_dropout),
            nn.Linear(h, h), nn.LayerNorm(h), nn.GELU(),
        )

    def forward(self, x):  # (batch, input_size) -> (batch, hidden_size)
        return self.net(x)


class ExpertBlock(nn.Module):
    """Pre-norm residual block: x + Linear(GELU(Linear(LayerNorm(x))))."""

    def __init__(self, config, width, kan=False):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = linear_layer(config, width, width, kan)
        self.fc2 = linear_layer(config, width, width, kan)

    def forward(self, x):  # (batch, width) -> (batch, width)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class GenreExpert(nn.Module):
    """One genre's expert: project to the expert width, two skip blocks, project to the output width.

    With `config.expert_type == "kan"` the block layers are Kolmogorov-Arnold layers; the input and
    output projections stay linear so both expert types share the same interface and widths.
    """

    def __init__(self, config):
        super().__init__()
        kan = config.expert_type == "kan"
        w = config.expert_hidden_size
        self.proj_in = nn.Linear(config.hidden_size, w)
        self.blocks = nn.ModuleList(ExpertBlock(config, w, kan) for _ in range(config.num_expert_blocks))
        self.norm = nn.LayerNorm(w)
        self.proj_out = nn.Linear(w, config.expert_output_size)

    def forward(self, h):  # (batch, hidden_size) -> (batch, expert_output_size)
        x = self.proj_in(h)
        for block in self.blocks:
            x = block(x)
        return self.proj_out(F.gelu(self.norm(x)))


class GatingNetwork(nn.Module):
    """Linear -> GELU -> LayerNorm -> Linear -> GELU -> Linear -> softmax over experts.

    Gaussian noise on the logits in training only, so every expert keeps receiving gradient early on.
    With `num_experts_per_tok = k` only the k largest weights are kept and renormalised (the other
    experts still run here: at five 27k-parameter experts the masking is cheaper than a dispatch).
    """

    def __init__(self, config):
        super().__init__()
        h1, h2 = config.gate_hidden_sizes
        self.net = nn.Sequential(
            nn.Linear(config.hidden_size, h1), nn.GELU(), nn.LayerNorm(h1),
            nn.Linear(h1, h2), nn.GELU(), nn.Linear(h2, config.num_labels),
        )
        self.noise_std = config.gate_noise_std
        self.top_k = config.num_experts_per_tok

    def forward(self, h):
        """(batch, hidden_size) -> (gate weights (batch, E), gate log-probabilities (batch, E))."""
        logits = self.net(h)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        log_weights = F.log_softmax(logits, dim=-1)
        return log_weights.exp(), log_weights


# ----------------------------------------------------------------------------------------------
# Losses (each returned by name)


#: Every loss term of the output, with the config field that weighs it in `loss` (None: weight 1).
#: Training logs, plots and the model card read the term names from here.
LOSS_WEIGHTS = {
    "ce_loss": None,
    "load_balance_loss": "load_balance_weight",
    "entropy_loss": "entropy_weight",
    "routing_loss": "routing_weight",
    "kan_reg_loss": "kan_reg_weight",
}
LOSS_TERMS = tuple(LOSS_WEIGHTS)


def load_balance_loss(gate_weights):
    """Switch Transformer balance term: E * sum_i f_i * P_i, 1.0 when routing is uniform.

    f_i is the fraction of clips whose top expert is i, P_i the mean gate weight of expert i.
    """
    num_experts = gate_weights.shape[-1]
    top = F.one_hot(gate_weights.argmax(-1), num_experts).float()
    return num_experts * (top.mean(0) * gate_weights.mean(0)).sum()


def gate_entropy_loss(gate_weights, log_weights):
    """Negative mean entropy of the per-clip gate weights (minimising it spreads the weights)."""
    p_log_p = torch.where(gate_weights > 0, gate_weights * log_weights, torch.zeros_like(gate_weights))
    return p_log_p.sum(-1).mean()


def routing_loss(log_weights, labels):
    """Cross-entropy between gate and genre: ties expert i to genre i.

    The balance and entropy terms carry no label information, so on their own any assignment of
    genres to experts (including none) satisfies them; this term is what makes experts specialise.
    """
    picked = log_weights.gather(1, labels[:, None]).squeeze(1)
    return -picked.clamp_min(-1e4).mean()  # clamp: a top-k-masked label expert gives -inf


# ----------------------------------------------------------------------------------------------
# The model


@dataclass
class MusicGenreMoEOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Weighted sum of every term below.
        logits (`torch.FloatTensor` of shape `(batch, num_genres)`):
            Classifier scores before softmax.
        gate_weights (`torch.FloatTensor` of shape `(batch, num_experts)`):
            Softmax routing weights; expert i is genre i's expert.
        embedding (`torch.FloatTensor` of shape `(batch, expert_output_size)`):
            The fused expert representation (used for few-shot prototypes).
        ce_loss, load_balance_loss, entropy_loss, routing_loss, kan_reg_loss (`torch.FloatTensor`):
            Unweighted loss terms, returned when `labels` are given (`kan_reg_loss` is 0 for MLP experts).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    gate_weights: torch.FloatTensor | None = None
    embedding: torch.FloatTensor | None = None
    ce_loss: torch.FloatTensor | None = None
    load_balance_loss: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None
    routing_loss: torch.FloatTensor | None = None
    kan_reg_loss: torch.FloatTensor | None = None


class WindowOutputs(NamedTuple):
    """What the model says of each window of a song (`MusicGenreMoE.window_outputs`)."""

    probabilities: torch.Tensor       #: (n_windows, num_labels) softmax of the logits
    gate_weights: torch.Tensor        #: (n_windows, num_experts)
    fewshot: Optional[torch.Tensor]   #: (n_windows, D) few-shot vectors, or None when no genre was added
    tag_logits: Optional[torch.Tensor]  #: (n_windows, 50) the front end's MSD tag logits, or None
    zscores: Optional[torch.Tensor]   #: (n_windows, input_size) z-scored inputs, when the model has genre centroids

    def mean(self):
        """The song: every field averaged over its windows, shape (1, ...)."""
        return WindowOutputs(*(None if v is None else v.mean(0, keepdim=True) for v in self))

    def rows(self, sl):
        """The windows in slice `sl` (one song's, out of a batch of songs)."""
        return WindowOutputs(*(None if v is None else v[sl] for v in self))


class MusicGenreMoEPreTrainedModel(PreTrainedModel):
    config_class = MusicGenreMoEConfig
    base_model_prefix = "moe"
    main_input_name = "input_features"
    input_modalities = "audio"

    def _init_weights(self, module):
        # PyTorch's own (Kaiming-uniform) init instead of transformers' N(0, 0.02): with N(0, 0.02)
        # this small network starts with near-zero activations and the gate learns slowly.
        if isinstance(module, (nn.Linear, nn.LayerNorm, KANLinear)):
            module.reset_parameters()


class MusicGenreMoE(MusicGenreMoEPreTrainedModel):
    """Shared encoder, one expert per genre, a noisy softmax gate, weighted fusion, classifier head."""

    def __init__(self, config):
        super().__init__(config)
        # The pretrained front end, when configured: its weights are part of this model's state
        # dict (and safetensors); `load_pretrained_frontend` fills them for a model about to train.
        self.frontend = MusiCNN(frozen=config.freeze_frontend) if config.frontend == "musicnn" else None
        self.encoder = SharedEncoder(config)
        self.experts = nn.ModuleList(GenreExpert(config) for _ in range(config.num_labels))
        self.gate = GatingNetwork(config)
        self.classifier = nn.Sequential(
            nn.Linear(config.expert_output_size, config.classifier_hidden_size), nn.GELU(),
            nn.Dropout(config.classifier_dropout), nn.Linear(config.classifier_hidden_size, config.num_labels),
        )
        self.post_init()
        self._freeze_frontend()

    # -- the pretrained front end -----------------------------------------------------------------

    def load_pretrained_frontend(self, path=DEFAULT_WEIGHTS):
        """Load the converted musicnn MSD weights into `self.frontend` (a new model's front end is random).

        train.py calls this before training; `from_pretrained` restores the front end from the
        model's own safetensors instead.
        """
        if self.frontend is None:
            raise ValueError(f"load_pretrained_frontend: config.frontend is {self.config.frontend!r}, not 'musicnn'")
        try:
            from .frontend import load_musicnn
        except ImportError:
            from frontend import load_musicnn
        self.frontend.load_state_dict(load_musicnn(path).state_dict())
        self._freeze_frontend()
        return self

    def _freeze_frontend(self):
        if self.frontend is not None and self.config.freeze_frontend:
            self.frontend.requires_grad_(False)
            self.frontend.eval()

    def train(self, mode=True):
        """As `nn.Module.train`, except that a frozen front end stays in eval mode (its batch norms
        keep the statistics musicnn was trained with)."""
        super().train(mode)
        self._freeze_frontend()
        return self

    def frontend_embedding(self, log_mel):
        """Front-end embedding of each window: (batch, n_patches, 187, 96) log-mel patches -> (batch, 200).

        The mean of musicnn's penultimate layer over the window's patches (`frontend.window_embeddings`
        computes the same from audio).
        """
        if self.frontend is None:
            raise ValueError(f"log_mel: this model has no front end (config.frontend={self.config.frontend!r}); "
                             "pass input_features only")
        log_mel = torch.as_tensor(log_mel, dtype=torch.float32, device=self.device)
        if log_mel.dim() != 4 or tuple(log_mel.shape[2:]) != (PATCH_FRAMES, MUSICNN_N_MELS):
            raise ValueError(f"log_mel: expected shape (batch, n_patches, {PATCH_FRAMES}, {MUSICNN_N_MELS}), "
                             f"got {tuple(log_mel.shape)}")
        b, p = log_mel.shape[:2]
        patches = log_mel.reshape(b * p, PATCH_FRAMES, MUSICNN_N_MELS)
        precision = self.config.frontend_precision  # low precision only applies without gradients
        step = patches_per_pass(precision)  # small passes keep the convolutions' output in cache on CPU
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_frontend):
            emb = torch.cat([self.frontend.embed(patches[i:i + step], precision) for i in range(0, len(patches), step)])
        return emb.reshape(b, p, -1).mean(1)

    # -- normalisation --------------------------------------------------------------------------

    def normalise(self, features, name="input_features"):
        """Checked raw inputs (batch, input_size) -> z-scores with the training stats in the config.

        Every door into the model (forward, predict, predict_audio, the pipeline) passes through here,
        so the caller never chooses whether to normalise: inputs are always raw features.
        """
        c = self.config
        x = as_feature_tensor(features, c.input_size, name).to(self.device)
        if not c.has_feature_stats:
            raise ValueError(
                f"{name}: this model has no feature_mean/feature_std in its config (it was never trained); "
                "train it with train.py, or call model.set_feature_stats(mean, std) with the training split's stats"
            )
        mean = torch.tensor(c.feature_mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(c.feature_std, dtype=x.dtype, device=x.device)
        z = (x - mean) / std
        extreme = z.abs() > MAX_ABS_ZSCORE
        if bool(extreme.any()):
            row, col = extreme.nonzero()[0].tolist()
            raise ValueError(
                f"{name}: row {row}, feature {col} ({_feature_name(col)}) is {x[row, col].item():.4g}, "
                f"{z[row, col].item():.3g} standard deviations from the training mean (limit {MAX_ABS_ZSCORE:g}); "
                "expected raw features from features.extract_features"
            )
        return z

    def set_feature_stats(self, mean, std):
        """Store the training split's per-feature mean and std (validated as the config validates them)."""
        try:
            from .configuration import _stats_list
        except ImportError:
            from configuration import _stats_list
        c = self.config
        c.feature_mean = _stats_list(mean, "feature_mean", c.input_size)
        c.feature_std = _stats_list(std, "feature_std", c.input_size)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, input_features, labels=None, log_mel=None, **kwargs):
        """
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, num_features)` or `(batch, input_size)`):
                Raw window features (`features.extract_features`, or the feature extractor's output).
                The model z-scores them with the training stats in its config: never normalise them
                yourself. With a front end (`config.frontend="musicnn"`) either pass the 59 features
                with `log_mel`, or the full `input_size` row (59 features, then the 200-d front-end
                embedding, as the workbench's `batch.extract_many` caches it). Values more than
                `MAX_ABS_ZSCORE` standard deviations from the training mean are refused with an
                error naming the row and the feature.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Genre indices; when given the output carries `loss` and every loss term.
            log_mel (`torch.FloatTensor` of shape `(batch, n_patches, 187, 96)`, *optional*):
                Each window's musicnn log-mel patches (the feature extractor's `log_mel`); the front
                end turns them into the embedding that joins `input_features`.

        Returns:
            `MusicGenreMoEOutput`
        """
        unknown = set(kwargs) - {"num_windows", "return_dict", "output_attentions", "output_hidden_states"}
        if unknown:
            raise TypeError(f"forward: unexpected argument(s) {sorted(unknown)}; expected input_features, labels "
                            "and (with a front end) log_mel")
        return self._forward_zscored(self.normalise(self._model_inputs(input_features, log_mel)), labels)

    def _model_inputs(self, input_features, log_mel):
        """(batch, input_size) raw inputs: the features, with the front-end embedding of `log_mel` appended."""
        c = self.config
        if log_mel is None:
            if c.frontend != "none" and np.shape(input_features)[-1] == c.num_features:
                raise ValueError(f"input_features: this model's front end ({c.frontend}) needs log_mel beside the "
                                 f"{c.num_features} features, or rows of input_size {c.input_size}")
            return input_features
        x = as_feature_tensor(input_features, c.num_features, "input_features").to(self.device)
        emb = self.frontend_embedding(log_mel)
        if emb.shape[0] != x.shape[0]:
            raise ValueError(f"log_mel: expected one window per input_features row ({x.shape[0]}), got {emb.shape[0]}")
        return torch.cat([x, emb.to(x.dtype)], dim=1)

    def _forward_zscored(self, x, labels=None):
        """The network on z-scored inputs (batch, input_size)."""
        h = self.encoder(x)                                           # (B, H)
        expert_out = torch.stack([e(h) for e in self.experts], dim=1)  # (B, E, D)
        gate_weights, log_weights = self.gate(h)                       # (B, E)
        embedding = (gate_weights.unsqueeze(-1) * expert_out).sum(1)   # (B, D)
        logits = self.classifier(embedding)                            # (B, C)

        out = MusicGenreMoEOutput(logits=logits, gate_weights=gate_weights, embedding=embedding)
        if labels is not None:
            labels = self._check_labels(labels, x.shape[0])
            c = self.config
            out.ce_loss = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
            out.load_balance_loss = load_balance_loss(gate_weights)
            out.entropy_loss = gate_entropy_loss(gate_weights, log_weights)
            out.routing_loss = routing_loss(log_weights, labels)
            out.kan_reg_loss = self.kan_regularization()
            out.loss = sum(out[term] * (1.0 if weight is None else getattr(c, weight))
                           for term, weight in LOSS_WEIGHTS.items())
        return out

    def _check_labels(self, labels, batch):
        labels = torch.as_tensor(labels, device=self.device).long()
        if labels.shape != (batch,):
            raise ValueError(f"labels: expected shape ({batch},), got {tuple(labels.shape)}")
        bad = (labels < 0) | (labels >= self.config.num_labels)
        if bool(bad.any()):
            raise ValueError(
                f"labels: expected genre indices in [0, {self.config.num_labels - 1}], got {labels[bad][0].item()}"
            )
        return labels

    def kan_regularization(self):
        """Sum of the KAN layers' spline regularisers (0 for MLP experts)."""
        terms = [m.regularization_loss() for m in self.modules() if isinstance(m, KANLinear)]
        return torch.stack(terms).sum() if terms else torch.zeros((), device=self.device)

    # -- inference helpers ------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, features):
        """Fused embeddings (batch, expert_output_size) of raw feature vectors, in eval mode."""
        self.eval()
        return self(features).embedding

    @torch.no_grad()
    def fewshot_embed(self, features):
        """(batch, D) vectors in the few-shot space (`config.prototype_space`) of raw inputs, in eval mode.

        The z-scored input (D = input_size), the z-scored front-end embedding (D = 200), the
        front-end embedding as the front end gives it (`"frontend_raw"`, D = 200) or the fused
        expert embedding (D = expert_output_size); with `config.prototype_metric="cosine"` each
        vector is L2-normalised, so a prototype (their mean) is the mean of unit vectors.
        `add_genre`, `set_genre_prototypes` and the prototype scores all use it.
        """
        self.eval()
        z = self.normalise(features)
        return self._fewshot_space(z, None)

    def _fewshot_space(self, z, fused):
        """z-scored features (B, F) -> few-shot vectors; `fused` is reused when already computed."""
        c = self.config
        if c.prototype_space == "features":
            emb = z
        elif c.prototype_space in ("frontend", "frontend_raw"):
            emb = z[:, c.num_features:]
            if c.prototype_space == "frontend_raw":  # undo the z-score: the embedding as musicnn gives it
                stats = [torch.tensor(v[c.num_features:], dtype=z.dtype, device=z.device)
                         for v in (c.feature_mean, c.feature_std)]
                emb = emb * stats[1] + stats[0]
        else:
            emb = fused if fused is not None else self._forward_zscored(z).embedding
        return metric_space(emb, c.prototype_metric)

    @torch.no_grad()
    def predict(self, features):
        """Genre prediction for one raw feature vector (59,) or a batch (batch, 59).

        Returns the seed's dict (`predicted_genre`, `confidence`, `probabilities`, `gate_weights`,
        names from `id2label`) for one vector, a list of them for a batch. Genres added with
        `add_genre` appear under `prototype_scores` and can be the `predicted_genre` (see `add_genre`).
        """
        single = _is_single_vector(features)
        results = self.genre_results(self.window_outputs(features), windows=True)
        return results[0] if single else results

    @torch.no_grad()
    def window_outputs(self, features, batch_windows=4096):
        """Per-window outputs of raw input rows (n_windows, input_size), in eval mode, in forward
        passes of at most `batch_windows` rows on the model's device: a `WindowOutputs` on the CPU."""
        self.eval()
        x = as_feature_tensor(features, self.config.input_size).to(self.device)
        parts = []
        for s in range(0, len(x), batch_windows):
            z = self.normalise(x[s:s + batch_windows])
            out = self._forward_zscored(z)
            fewshot = self._fewshot_space(z, out.embedding) if self._fewshot_genres_compete() else None
            parts.append(WindowOutputs(out.logits.softmax(-1), out.gate_weights, fewshot, self._tag_logits(z),
                                       z if self.config.genre_centroids else None))
        # Back on the CPU in one copy per field (on a GPU, the verdicts' many small reads would each wait on it).
        return WindowOutputs(*(None if parts[0][i] is None else torch.cat([p[i] for p in parts]).cpu()
                               for i in range(len(WindowOutputs._fields))))

    def _fewshot_genres_compete(self):
        # Few-shot genres compete only once the trained genres have prototypes too (train.py stores them).
        c = self.config
        return all(g in c.prototypes for g in c.genres) and len(c.prototypes) > len(c.genres)

    def _tag_logits(self, z):
        """The front end's tag logits from the rows' embedding columns, or None without a front end.

        The tag layer is linear in the embedding, so the tags of a window (the mean embedding of
        its patches) are the mean of its patches' tag logits: no second pass through the network.
        """
        c = self.config
        if self.frontend is None:
            return None
        mean = torch.tensor(c.feature_mean[c.num_features:], dtype=z.dtype, device=z.device)
        std = torch.tensor(c.feature_std[c.num_features:], dtype=z.dtype, device=z.device)
        return self.frontend.tags(z[:, c.num_features:] * std + mean)

    def genre_results(self, outputs, windows=False):
        """`WindowOutputs` -> one result dict per row (`windows=True`: every window's own fields only).

        A row's dict: `predicted_genre`, `confidence`, `probabilities` (of `config.decision`: the
        classifier head, the genre centroids, or their mean), `gate_weights`, and, when genres were
        added with `add_genre`, `prototype_scores` (the nearest prototype names the genre). A
        song's dict (`windows=False`) also carries `tags` (the front end's MSD tags with their
        probabilities, best first) when the model has a front end, and `novelty` (1 minus the
        cosine to the nearest genre centroid) and `known` (novelty within `config.novelty_threshold`)
        when the model has centroids.
        """
        c = self.config
        genres = c.genres
        probs, novelty = self.decision(outputs)
        proto_scores = self._prototype_scores(outputs.fewshot) if outputs.fewshot is not None else None
        results = []
        for i in range(probs.shape[0]):
            p = probs[i].tolist()
            best = int(np.argmax(p))
            r = {
                "predicted_genre": genres[best],
                "confidence": p[best],
                "probabilities": dict(zip(genres, p)),
                "gate_weights": dict(zip(genres, outputs.gate_weights[i].tolist())),
            }
            if proto_scores is not None:
                names, scores = proto_scores
                s = scores[i].tolist()
                r["prototype_scores"] = dict(zip(names, s))
                top = int(np.argmax(s))
                if names[top] not in c.label2id:  # a few-shot genre is nearest: name it
                    r["predicted_genre"], r["confidence"] = names[top], s[top]
            if not windows:
                if outputs.tag_logits is not None:
                    r["tags"] = frontend_tags(outputs.tag_logits[i])
                if novelty is not None:
                    r["novelty"] = float(novelty[i])
                    r["known"] = c.novelty_threshold is None or r["novelty"] <= c.novelty_threshold
            results.append(r)
        return results

    def centroid_cosines(self, zscores):
        """(n, num_labels) cosine of z-scored input rows (or song means of them) to each genre centroid."""
        c = self.config
        centroids = torch.tensor([c.genre_centroids[g] for g in c.genres], dtype=zscores.dtype, device=zscores.device)
        return prototype_scores(zscores, centroids, "cosine", scale=1.0)

    def decision(self, outputs):
        """(probabilities (n, num_labels) of `config.decision`, novelty (n,) or None) of `WindowOutputs`
        (per window, or `outputs.mean()` for a song)."""
        c = self.config
        if outputs.zscores is None:
            if c.decision != "classifier":
                raise ValueError(f"decision {c.decision!r} needs genre_centroids in the config (train.py stores them; "
                                 "or call model.set_genre_centroids), got none")
            return outputs.probabilities, None
        cos = self.centroid_cosines(outputs.zscores)
        nearest = (COSINE_SCALE * cos).softmax(-1)
        probs = {"classifier": outputs.probabilities, "centroids": nearest,
                 "blend": (outputs.probabilities + nearest) / 2}[c.decision]
        return probs, 1.0 - cos.max(-1).values

    def set_genre_centroids(self, features, labels, groups=None):
        """Store each trained genre's centroid in the z-scored input space: the mean over its artists of
        their songs' mean input (`prototypes.artist_weighted_prototypes`).

        `groups`: (song ids, artist ids), one of each per row of `features` (raw window inputs); None
        makes every row its own song and artist.
        """
        songs, artists = _songs_and_artists(groups, len(labels))
        centroids = artist_weighted_prototypes(self.normalise(features), labels, self.config.num_labels, songs, artists)
        self.config.genre_centroids = dict(zip(self.config.genres, centroids.tolist()))

    # -- audio ------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_audio(self, audio, sampling_rate=None):
        """Predict the genre of an audio file (any length) or a waveform: `song.song_verdict`.

        The audio is resampled to `config.sampling_rate`, cut into `config.clip_seconds` windows,
        and the window probabilities and gate weights averaged. Needs librosa and soundfile.

        Args:
            audio (`str`, `Path`, `bytes` or array): a file path, the file's bytes, or a waveform:
                float samples in [-1, 1] or integer PCM (scaled by its dtype's range), mono
                `(samples,)` or multichannel `(channels, samples)` / `(samples, channels)`.
            sampling_rate (`int`): the waveform's sample rate; required for arrays, ignored for files.

        Returns:
            The `predict` dict for the whole song plus `top`, `duration_s`, `num_windows`, `tags`
            (with a front end) and `windows` (one dict per window with `start`/`end` seconds,
            clipped to the song, `predicted_genre`, `confidence`, `probabilities`, `gate_weights`).
        """
        return song_verdict(self, self.song_inputs(audio, sampling_rate))

    def song_inputs(self, audio, sampling_rate=None):
        """The model's door from audio to its inputs: `song.song_inputs` of the decoded song (a `SongInputs`)."""
        c = self.config
        y = song_waveform(audio, sampling_rate, sr=c.sampling_rate)
        source = os.fspath(audio) if isinstance(audio, (str, os.PathLike)) else "array"  # errors name the file
        return song_inputs(y, c.sampling_rate, c.clip_seconds, self.frontend, source=source,
                           frontend_precision=c.frontend_precision)

    # -- few-shot genres --------------------------------------------------------------------------

    @torch.no_grad()
    def add_genre(self, name, examples, sampling_rate=None):
        """Learn a new genre from K >= 1 examples without gradient updates (a Prototypical-Networks prototype).

        Args:
            name (`str`): the new genre's name: 1-64 characters, letters, digits, spaces and `-_&'.+`,
                not a trained genre. Adding a few-shot genre twice replaces its prototype.
            examples: a list of audio paths, a list of waveforms (with `sampling_rate`), or raw
                (not z-scored) feature vectors of shape (K, num_features).

        The prototype is the mean of the examples' windows in the few-shot space (`fewshot_embed`:
        the z-scored features by default, see `config.prototype_space`; with
        `config.prototype_metric="cosine"` the mean of the windows' L2-normalised vectors); it is
        stored in `config.prototypes`, so it survives `save_pretrained` and Hub loading. From then on
        `predict` adds `prototype_scores` (a softmax over the scores of `config.prototype_metric` to
        every prototype, the trained genres' included: train.py stores them with
        `set_genre_prototypes`, in the same space and metric) and names the nearest genre.
        """
        name = check_genre_name(name)
        if name in self.config.label2id:
            raise ValueError(f"add_genre: {name!r} is already a trained genre ({self.config.genres})")
        feats = self._examples_to_features(examples, sampling_rate)
        emb = self.fewshot_embed(feats)
        self.config.prototypes[name] = emb.mean(0).tolist()
        return self.config.prototypes[name]

    def _examples_to_features(self, examples, sampling_rate):
        if isinstance(examples, (np.ndarray, torch.Tensor)) and np.ndim(examples) == 2 \
                and np.shape(examples)[1] == self.config.input_size:
            return as_feature_tensor(examples, self.config.input_size, "examples")
        if isinstance(examples, (str, bytes)) or hasattr(examples, "__fspath__"):
            examples = [examples]
        if len(examples) == 0:
            raise ValueError("add_genre: expected at least one example, got none")
        first = examples[0]
        if np.ndim(first) == 1 and len(first) == self.config.input_size and not isinstance(first, str):
            return as_feature_tensor(np.stack(examples), self.config.input_size, "examples")
        return torch.cat([torch.as_tensor(self.song_inputs(e, sampling_rate).features) for e in examples])

    def set_genre_prototypes(self, features, labels, groups=None):
        """Store the trained genres' prototypes in the few-shot space (`fewshot_embed` of raw training
        rows), every artist counting once (`groups`: (song ids, artist ids) per row, as in
        `set_genre_centroids`; None: plain means of the rows).

        Called by train.py so that few-shot genres compete with trained genres on equal terms.
        """
        emb = self.fewshot_embed(features)
        if groups is None:
            protos = class_prototypes(emb, labels, self.config.num_labels)
        else:
            protos = artist_weighted_prototypes(emb, labels, self.config.num_labels, *_songs_and_artists(groups, len(labels)))
        for genre, proto in zip(self.config.genres, protos.tolist()):
            self.config.prototypes[genre] = proto

    # -- saving -----------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, writing a folder that loads anywhere as it is.

        Beside config.json and the weights: `auto_map` and `custom_pipelines` in the config,
        preprocessor_config.json (the feature extractor), the code files (this module and its
        siblings, `model_code_files`) and, with the musicnn front end, its licence. So
        `AutoModel.from_pretrained(folder, trust_remote_code=True)` and `pipeline(model=folder,
        trust_remote_code=True)` work on any folder saved here, after `add_genre` too.

        Atomic: every file is written into a hidden temporary folder beside the target and renamed
        into place only once all were written, so an error or a kill never leaves a 0-byte or
        half-written `config.json` / weights file.
        """
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise ValueError(f"save_pretrained: {target} is a file, expected a folder")
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".save-partial-", dir=target))
        own = self.config
        try:
            self.config = own.__class__.from_dict(own.to_dict())
            self.config.auto_map = dict(AUTO_MAP)
            self.config.custom_pipelines = {k: dict(v) for k, v in CUSTOM_PIPELINES.items()}
            result = super().save_pretrained(tmp, *args, **kwargs)
            _save_feature_extractor(self.config, tmp)
            here = Path(__file__).resolve().parent
            for name in model_code_files(here):
                shutil.copy2(here / name, tmp / name)
            if own.frontend == "musicnn" and (here / MUSICNN_LICENSE).is_file():
                shutil.copy2(here / MUSICNN_LICENSE, tmp / MUSICNN_LICENSE)  # the weights ship: so does their licence
            for f in tmp.iterdir():
                os.replace(f, target / f.name)
        finally:
            self.config = own
            shutil.rmtree(tmp, ignore_errors=True)
        return result

    def _prototype_scores(self, embedding):
        """Softmax over the prototype scores (`prototypes.prototype_scores`) to every prototype: (names, (batch, P)).

        Euclidean: negative squared distances divided by the space's width, so that the scores do
        not saturate in the 59-dim feature space. Cosine: `prototypes.COSINE_SCALE` times the cosine
        similarity. Neither rescaling moves the nearest prototype (the argmax).
        """
        names = list(self.config.prototypes)
        protos = torch.tensor([self.config.prototypes[n] for n in names], dtype=embedding.dtype,
                              device=embedding.device)
        scores = prototype_scores(embedding, protos, self.config.prototype_metric)
        if self.config.prototype_metric == "euclidean":
            scores = scores / embedding.shape[-1]
        return names, scores.softmax(-1)


# ----------------------------------------------------------------------------------------------
# What a saved folder needs to load anywhere (with trust_remote_code), written by save_pretrained


# One key per Auto class, written explicitly (register_for_auto_class keeps only the last call).
AUTO_MAP = {
    "AutoConfig": "configuration.MusicGenreMoEConfig",
    "AutoModel": "modeling.MusicGenreMoE",
    "AutoModelForAudioClassification": "modeling.MusicGenreMoE",
}
FEATURE_EXTRACTOR_AUTO_MAP = {"AutoFeatureExtractor": "pipeline.MusicGenreFeatureExtractor"}
# pipeline(model=..., trust_remote_code=True) takes the task from here when there is one entry, and
# task="audio-classification" picks this class instead of the stock (ffmpeg/torchaudio) pipeline.
CUSTOM_PIPELINES = {
    "audio-classification": {
        "impl": "pipeline.MusicGenreClassificationPipeline",
        "pt": ["AutoModelForAudioClassification"],
        "tf": [],
        "type": "audio",
    }
}
# Modules the remote loader imports; their `from .x import` siblings are added by `model_code_files`.
ENTRY_MODULES = ("configuration.py", "modeling.py", "pipeline.py")
MUSICNN_LICENSE = "LICENSE-musicnn"  # ISC notice of the musicnn weights (frontend.py)


def model_code_files(root):
    """Code files the remote loader needs: the entry modules and, transitively, their `from .x import`s."""
    import re

    todo, found = list(ENTRY_MODULES), []
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        path = Path(root) / name
        if not path.is_file():
            raise FileNotFoundError(f"{name} is missing from {root}: the Hub loader needs it")
        found.append(name)
        # The same patterns transformers' dynamic-module loader follows.
        text = path.read_text(encoding="utf-8")
        todo += [f"{m.split('.')[0]}.py" for m in re.findall(r"^\s*from\s+\.(\S+)\s+import", text, re.M)]
        todo += [f"{m.split('.')[0]}.py" for m in re.findall(r"^\s*import\s+\.(\S+)\s*$", text, re.M)]
    return found


def _save_feature_extractor(config, folder):
    """preprocessor_config.json for `config`, with the AutoFeatureExtractor map."""
    import json

    try:
        from .pipeline import MusicGenreFeatureExtractor
    except ImportError:
        from pipeline import MusicGenreFeatureExtractor
    MusicGenreFeatureExtractor.for_config(config).save_pretrained(folder)
    path = Path(folder) / "preprocessor_config.json"
    data = json.loads(path.read_text())
    data["auto_map"] = dict(FEATURE_EXTRACTOR_AUTO_MAP)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------
# The seed notebook's API, kept for its users


CHECKPOINT_NAME = "moe_genre_checkpoint.pt"
EXPORT_DIR_NAME = "hf_model"


def load_moe_model(path):
    """Load a trained model from a run folder, a `save_pretrained` folder or a `moe_genre_checkpoint.pt`.

    A run folder (what train.py writes) is read through its `hf_model/` export. The `.pt`
    checkpoint holds only tensors and plain types and is read with `torch.load(weights_only=True)`:
    a checkpoint that carries any other pickled object is refused, never executed.

    Returns:
        (model in eval mode, feat_mean (input_size,) float32, feat_std (input_size,) float32, genres list)
    """
    path = Path(path)
    if path.is_dir() and (path / EXPORT_DIR_NAME / "config.json").is_file():
        path = path / EXPORT_DIR_NAME
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: expected a run folder (with {EXPORT_DIR_NAME}/), a save_pretrained folder "
                             f"(with config.json) or a {CHECKPOINT_NAME} file")
        model = MusicGenreMoE.from_pretrained(path)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            config, state = MusicGenreMoEConfig.from_dict(ckpt["config"]), ckpt["model_state_dict"]
        except Exception as e:  # truncated file, a pickle of arbitrary objects, missing keys
            raise ValueError(f"{path}: not a music-genre-moe checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        model = MusicGenreMoE(config)
        model.load_state_dict(state)
    model.eval()
    c = model.config
    if not c.has_feature_stats:
        raise ValueError(f"{path}: the checkpoint has no feature_mean/feature_std (expected a trained model)")
    return (model, np.asarray(c.feature_mean, np.float32), np.asarray(c.feature_std, np.float32), c.genres)


def predict_audio_file(path, model, feat_mean=None, feat_std=None):
    """Seed API: (probs (num_genres,), gate_weights (num_experts,), predicted_genre) for an audio file.

    The same computation as `model.predict_audio(path)` (long files are cut into windows and
    averaged). The model normalises with the stats in its own config; `feat_mean`/`feat_std`
    are accepted for the seed's call signature and must equal them (a mismatch is an error, not
    a silent second normalisation).
    """
    for name, given, own in (("feat_mean", feat_mean, model.config.feature_mean),
                             ("feat_std", feat_std, model.config.feature_std)):
        if given is not None and (own is None or not np.allclose(np.asarray(given, np.float64), own, rtol=1e-5)):
            raise ValueError(f"predict_audio_file: {name} differs from the model's config.{name.replace('feat', 'feature')}; "
                             "the model normalises with its own training stats: pass neither")
    song = model.predict_audio(path)
    genres = model.config.genres
    probs = np.asarray([song["probabilities"][g] for g in genres], np.float32)
    gates = np.asarray([song["gate_weights"][g] for g in genres], np.float32)
    return probs, gates, genres[int(probs.argmax())]


def pretty_predict(name, probs, gate_weights, pred, genres, width=30):
    """Print the seed's report: probabilities as bars (█░) and gate weights as dots (▪·).

    `genres` is required (`model.config.genres`, the label order of `probs`): guessing the seed's
    five-genre order would mislabel the bars of any other model.
    """
    genres = list(genres) if genres is not None else None
    if genres is None or len(genres) != len(probs) or len(gate_weights) != len(probs):
        raise ValueError(f"pretty_predict: expected genres (model.config.genres) with one name per probability "
                         f"({len(probs)}) and gate weight ({len(gate_weights)}), got {genres!r}")
    rule = "─" * 55
    lines = [rule, f"🎵 {name}", rule,
             f"Predicted genre : {pred.upper()} ({probs[genres.index(pred)]:.0%} confidence)", rule,
             "Genre probabilities:"]
    for i in np.argsort(probs)[::-1]:
        n = int(round(probs[i] * width))
        lines.append(f"  {genres[i]:<10} [{'█' * n}{'░' * (width - n)}] {probs[i]:.0%}")
    lines.append("Expert gate weights:")
    for i in np.argsort(gate_weights)[::-1]:
        n = int(round(gate_weights[i] * 21))
        lines.append(f"  {genres[i]:<10} [{'▪' * n}{'·' * (21 - n)}] {gate_weights[i]:.2f}")
    lines.append(rule)
    print("\n".join(lines))
    return "\n".join(lines)


def frontend_tags(logits, top_k=10):
    """The front end's MSD tags of one song or window, best first: {tag: probability} for the `top_k` most likely."""
    probs = torch.sigmoid(torch.as_tensor(logits).float()).tolist()
    order = sorted(range(len(probs)), key=lambda i: -probs[i])[:top_k]
    return {MSD_TAGS[i]: round(probs[i], 6) for i in order}


def _songs_and_artists(groups, n):
    """(song ids, artist ids) per row: `groups` as given, or every row its own song and artist."""
    if groups is None:
        return np.arange(n), np.arange(n)
    songs, artists = (np.asarray(g) for g in groups)
    if songs.shape != (n,) or artists.shape != (n,):
        raise ValueError(f"groups: expected (song ids, artist ids) of {n} rows each, got shapes "
                         f"{songs.shape} and {artists.shape}")
    return songs, artists


def _feature_name(index):
    return FEATURE_NAMES[index] if index < len(FEATURE_NAMES) else f"front-end unit {index - len(FEATURE_NAMES)}"


def _is_single_vector(features):
    return np.ndim(features) == 1 if not isinstance(features, torch.Tensor) else features.dim() == 1


__all__ = ["MusicGenreMoE", "MusicGenreMoEOutput", "GenreExpert", "GatingNetwork", "as_feature_tensor",
           "check_genre_name", "load_moe_model", "predict_audio_file", "pretty_predict"]
