"""The music-genre Mixture-of-Experts model.

Reads top-down: feature checks and normalisation, the blocks (shared encoder, `GenreExpert`,
`GatingNetwork`), the losses, then the full `MusicGenreMoE` with `forward`, `predict`,
`predict_audio` and few-shot `add_genre`.

    features (batch, 59) -> z-score -> shared encoder (batch, 128)
        -> experts: E x (batch, 32)      gate: (batch, E) softmax weights
        -> fused = sum_i gate_i * expert_i   (batch, 32)   (the genre embedding)
        -> classifier head -> logits (batch, num_genres)
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

try:
    from .configuration import DEFAULT_GENRES, MusicGenreMoEConfig
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from configuration import DEFAULT_GENRES, MusicGenreMoEConfig

try:
    from .kan import KANLinear
except ImportError:
    from kan import KANLinear


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
    """Linear(59->128) -> LayerNorm -> GELU -> Dropout -> Linear(128->128) -> LayerNorm -> GELU."""

    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.net = nn.Sequential(
            nn.Linear(config.num_features, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(config.encoder_dropout),
            nn.Linear(h, h), nn.LayerNorm(h), nn.GELU(),
        )

    def forward(self, x):  # (batch, num_features) -> (batch, hidden_size)
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
        self.encoder = SharedEncoder(config)
        self.experts = nn.ModuleList(GenreExpert(config) for _ in range(config.num_labels))
        self.gate = GatingNetwork(config)
        self.classifier = nn.Sequential(
            nn.Linear(config.expert_output_size, config.classifier_hidden_size), nn.GELU(),
            nn.Dropout(config.classifier_dropout), nn.Linear(config.classifier_hidden_size, config.num_labels),
        )
        self.post_init()

    # -- normalisation --------------------------------------------------------------------------

    def _zscored(self, features, already_normalised, name="input_features"):
        """Checked (batch, num_features) tensor on the model's device, z-scored unless already."""
        x = as_feature_tensor(features, self.config.num_features, name).to(self.device)
        return x if already_normalised else self.normalise(x)

    def normalise(self, features):
        """z-score raw features with the training split's stats kept in the config."""
        if not self.config.has_feature_stats:
            raise ValueError(
                "already_normalised=False needs the training feature_mean/feature_std in the config, "
                "got None: this model was never trained (or its config lost the stats)"
            )
        mean = torch.tensor(self.config.feature_mean, dtype=features.dtype, device=features.device)
        std = torch.tensor(self.config.feature_std, dtype=features.dtype, device=features.device)
        return (features - mean) / std

    # -- forward --------------------------------------------------------------------------------

    def forward(self, input_features, labels=None, already_normalised=True, **kwargs):
        """
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, num_features)`):
                Feature vectors (`features.extract_features`), z-scored unless `already_normalised=False`.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Genre indices; when given the output carries `loss` and every loss term.
            already_normalised (`bool`, defaults to `True`):
                `False` applies the config's `feature_mean`/`feature_std` first.

        Returns:
            `MusicGenreMoEOutput`
        """
        x = self._zscored(input_features, already_normalised)
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
            out.loss = (
                out.ce_loss
                + c.load_balance_weight * out.load_balance_loss
                + c.entropy_weight * out.entropy_loss
                + c.routing_weight * out.routing_loss
                + c.kan_reg_weight * out.kan_reg_loss
            )
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
    def embed(self, features, already_normalised=True):
        """Fused embeddings (batch, expert_output_size) for feature vectors, in eval mode."""
        self.eval()
        return self(features, already_normalised=already_normalised).embedding

    @torch.no_grad()
    def fewshot_embed(self, features, already_normalised=True):
        """(batch, D) vectors in the few-shot space (`config.prototype_space`), in eval mode.

        The z-scored features (D = num_features) or the fused expert embedding (D =
        expert_output_size). `add_genre`, `set_genre_prototypes` and the prototype scores all use it.
        """
        return self._fewshot_space(self._zscored(features, already_normalised), None)

    def _fewshot_space(self, z, fused):
        """z-scored features (B, F) -> few-shot embeddings; `fused` is reused when already computed."""
        if self.config.prototype_space == "features":
            return z
        return fused if fused is not None else self.embed(z)

    @torch.no_grad()
    def predict(self, features, already_normalised=True):
        """Genre prediction for one feature vector (59,) or a batch (batch, 59).

        Returns the seed's dict (`predicted_genre`, `confidence`, `probabilities`, `gate_weights`,
        names from `id2label`) for one vector, a list of them for a batch. Genres added with
        `add_genre` appear under `prototype_scores` and can be the `predicted_genre` (see `add_genre`).
        """
        single = _is_single_vector(features)
        self.eval()
        z = self._zscored(features, already_normalised)
        out = self(z)
        results = self._results(out.logits.softmax(-1), out.gate_weights, self._fewshot_space(z, out.embedding))
        return results[0] if single else results

    def _results(self, probs, gate_weights, embedding):
        genres = self.config.genres
        # Few-shot genres compete only once the trained genres have prototypes too (train.py stores them).
        has_all = all(g in self.config.prototypes for g in genres) and len(self.config.prototypes) > len(genres)
        proto_scores = self._prototype_scores(embedding) if has_all else None
        results = []
        for i in range(probs.shape[0]):
            p = probs[i].tolist()
            best = int(np.argmax(p))
            r = {
                "predicted_genre": genres[best],
                "confidence": p[best],
                "probabilities": dict(zip(genres, p)),
                "gate_weights": dict(zip(genres, gate_weights[i].tolist())),
            }
            if proto_scores is not None:
                names, scores = proto_scores
                s = scores[i].tolist()
                r["prototype_scores"] = dict(zip(names, s))
                top = int(np.argmax(s))
                if names[top] not in self.config.label2id:  # a few-shot genre is nearest: name it
                    r["predicted_genre"], r["confidence"] = names[top], s[top]
            results.append(r)
        return results

    # -- audio ------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_audio(self, audio, sampling_rate=None):
        """Predict the genre of an audio file (any length) or a 1-D waveform.

        The audio is resampled to `config.sampling_rate`, cut into `config.clip_seconds` windows,
        and the window probabilities and gate weights averaged. Needs librosa and soundfile.

        Args:
            audio (`str`, `Path` or `np.ndarray` of shape `(samples,)`): a file path or a mono waveform.
            sampling_rate (`int`): the waveform's sample rate; required for arrays, ignored for paths.

        Returns:
            The `predict` dict for the whole song plus `num_windows` and `windows` (one dict per
            window with `start`/`end` seconds, `predicted_genre`, `confidence`, `probabilities`).
        """
        feats, starts = self._window_features(audio, sampling_rate, return_starts=True)
        self.eval()
        z = self._zscored(feats, already_normalised=False)
        out = self(z)
        probs = out.logits.softmax(-1)
        emb = self._fewshot_space(z, out.embedding)
        song = self._results(probs.mean(0, keepdim=True), out.gate_weights.mean(0, keepdim=True),
                             emb.mean(0, keepdim=True))[0]
        sr, win = self.config.sampling_rate, self.config.clip_seconds
        song["num_windows"] = len(feats)
        song["windows"] = [
            {"start": round(int(s0) / sr, 3), "end": round(int(s0) / sr + win, 3),
             **{k: r[k] for k in ("predicted_genre", "confidence", "probabilities")}}
            for s0, r in zip(starts, self._results(probs, out.gate_weights, emb))
        ]
        return song

    def _window_features(self, audio, sampling_rate=None, return_starts=False):
        """(n_windows, num_features) raw features of a file or waveform, at the config's sample rate.

        Silent windows are skipped (see `features.extract_windows`); `return_starts` adds each kept
        window's first sample.
        """
        try:
            from .features import load_audio, extract_windows, resample_audio
        except ImportError:
            from features import load_audio, extract_windows, resample_audio
        sr = self.config.sampling_rate
        if isinstance(audio, (str, bytes)) or hasattr(audio, "__fspath__"):
            y = load_audio(audio, sr=sr)
        else:
            if sampling_rate is None:
                raise ValueError("predict_audio: a waveform needs its sampling_rate (e.g. 22050), got None")
            y = resample_audio(np.asarray(audio, dtype=np.float32), int(sampling_rate), sr)
        return extract_windows(y, sr=sr, clip_seconds=self.config.clip_seconds, return_starts=return_starts)

    # -- few-shot genres --------------------------------------------------------------------------

    @torch.no_grad()
    def add_genre(self, name, examples, sampling_rate=None):
        """Learn a new genre from K >= 1 examples without gradient updates (a Prototypical-Networks prototype).

        Args:
            name (`str`): the new genre's name (must not be a trained genre).
            examples: a list of audio paths, a list of waveforms (with `sampling_rate`), or raw
                (not z-scored) feature vectors of shape (K, num_features).

        The prototype is the mean of the examples' windows in the few-shot space (`fewshot_embed`:
        the z-scored features by default, see `config.prototype_space`); it is stored in
        `config.prototypes`, so it survives `save_pretrained` and Hub loading. From then on `predict`
        adds `prototype_scores` (softmax of negative squared distances to every prototype, the trained
        genres' included: train.py stores them with `set_genre_prototypes`) and names the nearest genre.
        """
        if name in self.config.label2id:
            raise ValueError(f"add_genre: {name!r} is already a trained genre ({self.config.genres})")
        feats = self._examples_to_features(examples, sampling_rate)
        emb = self.fewshot_embed(feats, already_normalised=False)
        self.config.prototypes[name] = emb.mean(0).tolist()
        return self.config.prototypes[name]

    def _examples_to_features(self, examples, sampling_rate):
        if isinstance(examples, (np.ndarray, torch.Tensor)) and np.ndim(examples) == 2:
            return as_feature_tensor(examples, self.config.num_features, "examples")
        if isinstance(examples, (str, bytes)) or hasattr(examples, "__fspath__"):
            examples = [examples]
        if len(examples) == 0:
            raise ValueError("add_genre: expected at least one example, got none")
        first = examples[0]
        if np.ndim(first) == 1 and len(first) == self.config.num_features and not isinstance(first, str):
            return as_feature_tensor(np.stack(examples), self.config.num_features, "examples")
        return torch.cat([torch.as_tensor(self._window_features(e, sampling_rate)) for e in examples])

    def set_genre_prototypes(self, features, labels):
        """Store the trained genres' prototypes (mean `fewshot_embed` of raw training features per genre).

        Called by train.py so that few-shot genres compete with trained genres on equal terms.
        """
        emb = self.fewshot_embed(features, already_normalised=False)
        labels = torch.as_tensor(labels)
        for i, genre in enumerate(self.config.genres):
            self.config.prototypes[genre] = emb[labels == i].mean(0).tolist()

    def _prototype_scores(self, embedding):
        """Softmax over negative mean squared distances to every prototype: (names, (batch, P)).

        The squared distance is divided by the space's width so that the scores do not saturate
        in the 59-dim feature space (the nearest prototype, the argmax, is unchanged).
        """
        names = list(self.config.prototypes)
        protos = torch.tensor([self.config.prototypes[n] for n in names], dtype=embedding.dtype,
                              device=embedding.device)
        return names, (-torch.cdist(embedding, protos).pow(2) / embedding.shape[-1]).softmax(-1)


# ----------------------------------------------------------------------------------------------
# The seed notebook's API, kept for its users


def load_moe_model(path):
    """Load a run's `moe_genre_checkpoint.pt` (or a `save_pretrained` folder).

    Returns:
        (model in eval mode, feat_mean (59,) float32, feat_std (59,) float32, genres list)
    """
    import os

    if os.path.isdir(path):
        model = MusicGenreMoE.from_pretrained(path)
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            config, state = MusicGenreMoEConfig.from_dict(ckpt["config"]), ckpt["model_state_dict"]
        except FileNotFoundError:
            raise
        except Exception as e:  # truncated file, wrong pickle, missing keys
            raise ValueError(f"{path}: not a music-genre-moe checkpoint ({type(e).__name__}: {e})") from e
        model = MusicGenreMoE(config)
        model.load_state_dict(state)
    model.eval()
    c = model.config
    if not c.has_feature_stats:
        raise ValueError(f"{path}: the checkpoint has no feature_mean/feature_std (expected a trained model)")
    return (model, np.asarray(c.feature_mean, np.float32), np.asarray(c.feature_std, np.float32), c.genres)


def predict_audio_file(path, model, feat_mean=None, feat_std=None):
    """Seed API: (probs (num_genres,), gate_weights (num_experts,), predicted_genre) for an audio file.

    `feat_mean`/`feat_std` default to the stats in the model's config; passing them overrides it.
    Long files are cut into windows and averaged, as in `MusicGenreMoE.predict_audio`.
    """
    feats = torch.as_tensor(model._window_features(path))
    if feat_mean is not None or feat_std is not None:
        if feat_mean is None or feat_std is None:
            raise ValueError("predict_audio_file: pass both feat_mean and feat_std, or neither")
        feats = (feats - torch.as_tensor(np.asarray(feat_mean, np.float32))) / torch.as_tensor(
            np.asarray(feat_std, np.float32))
        normalised = True
    else:
        normalised = False
    model.eval()
    with torch.no_grad():
        out = model(feats, already_normalised=normalised)
    probs = out.logits.softmax(-1).mean(0).numpy()
    gates = out.gate_weights.mean(0).numpy()
    return probs, gates, model.config.genres[int(probs.argmax())]


def pretty_predict(name, probs, gate_weights, pred, genres=None, width=30):
    """Print the seed's report: probabilities as bars (█░) and gate weights as dots (▪·)."""
    genres = list(genres or DEFAULT_GENRES)  # the seed called it with its five genres
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


def _is_single_vector(features):
    return np.ndim(features) == 1 if not isinstance(features, torch.Tensor) else features.dim() == 1


__all__ = ["MusicGenreMoE", "MusicGenreMoEOutput", "GenreExpert", "GatingNetwork", "as_feature_tensor",
           "load_moe_model", "predict_audio_file", "pretty_predict"]
