"""The pretrained musicnn front end: its exact log-mel input and the MSD model in PyTorch.

musicnn (Pons & Serra, 2019) is a mel-spectrogram CNN trained on the Million Song Dataset's 50 most
frequent tags. This module re-implements its ``MSD_musicnn`` model for inference, with weights
converted from the TensorFlow checkpoint in the ``musicnn==0.1.0`` wheel by ``convert_musicnn.py``
(``musicnn_msd.safetensors`` beside this file, ISC licence: see ``LICENSE-musicnn``). Outputs match
the original to ~1e-5 (``tests/test_frontend.py`` checks them against TensorFlow's answers).

The path, top down::

    audio, 16 kHz mono
      -> log_mel:          |STFT(512, hop 256)|**2 -> 96 Slaney mel bands -> float16 -> log10(10000 x + 1)
      -> log_mel_patches:  non-overlapping 187-frame (~3 s) patches, trailing frames dropped
      -> MusiCNN:          front end (timbral 7x38, 7x67 and temporal 128, 64, 32 convolutions,
                           each max-pooled over frequency) -> mid-end (three 7-frame convolutions,
                           dense-residual) -> back end (max and mean over time, 200-unit dense,
                           50 tag logits)
      -> window_embedding: mean of the 200-d penultimate layer over a window's patches

Inference precision (``precision=`` of :meth:`MusiCNN.embed` and :func:`window_embeddings`, the
config's ``frontend_precision``): ``"fp32"`` is the network above, exactly; ``"bf16"`` and ``"int8"``
run the five front-end convolutions (95% of the arithmetic) as matrix products in bfloat16, or in
int8 for all but ``temporal_32`` (kept in bfloat16), fast on CPUs with AVX-512 BF16 / VNNI;
``"auto"`` (:func:`resolve_precision`) picks int8 where the CPU has both, bf16 where it has BF16
only, fp32 elsewhere. The low-precision paths are for inference only (no gradients); cached training
embeddings should use ``"fp32"`` so a model's training inputs do not depend on the CPU; with
gradients enabled (a training forward pass) the network always runs in fp32.

Only torch and numpy are needed to import this file and run the network; ``log_mel`` and the
window helpers need librosa (imported inside ``try:``, so a Hub user with patches or embeddings
already computed does not need it).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    import librosa
except ImportError:  # pragma: no cover - exercised only without the audio extras
    librosa = None

try:
    from .features import resample_audio
except ImportError:
    from features import resample_audio

__all__ = [
    "MUSICNN_SAMPLE_RATE", "MUSICNN_N_FFT", "MUSICNN_HOP_LENGTH", "MUSICNN_N_MELS", "PATCH_FRAMES",
    "PATCH_SECONDS", "PATCH_SAMPLES", "EMBEDDING_SIZE", "MSD_TAGS", "DEFAULT_WEIGHTS",
    "log_mel", "log_mel_patches", "MusiCNN", "MusiCNNOutput", "load_musicnn",
    "window_patches", "window_embedding", "window_embeddings", "patch_embeddings", "song_windows_16k",
    "patches_per_pass",
    "PRECISIONS", "cpu_flags", "resolve_precision",
]

MUSICNN_SAMPLE_RATE = 16000
MUSICNN_N_FFT = 512
MUSICNN_HOP_LENGTH = 256
MUSICNN_N_MELS = 96
#: Frames per patch: musicnn's ``time_to_frames(3 s) + 1``, the input length it was trained on.
PATCH_FRAMES = 187
#: Audio advanced per patch when patches are laid end to end (2.992 s).
PATCH_SECONDS = PATCH_FRAMES * MUSICNN_HOP_LENGTH / MUSICNN_SAMPLE_RATE
#: Fewest 16-kHz samples that give one whole patch (centred frames: 1 + n // hop >= 187).
PATCH_SAMPLES = (PATCH_FRAMES - 1) * MUSICNN_HOP_LENGTH
EMBEDDING_SIZE = 200
#: Bumped whenever the embedding of a given window changes (cached embeddings carry it):
#: 2 = the song resampled to 16 kHz once and its windows cut from it (1: each window resampled).
EMBEDDING_VERSION = 2
#: The 50 Million Song Dataset tags, in the order of the model's outputs.
MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "musicnn_msd.safetensors"

#: TensorFlow's batch-norm epsilon. PyTorch's default (1e-5) moves the logits by up to 2 on the
#: reference patches: some running variances are near 1e-3, where epsilon matters.
_TF_BN_EPS = 1e-3


# --------------------------------------------------------------------------------------------
# Input: log-mel patches
# --------------------------------------------------------------------------------------------


def _check_input(y: np.ndarray, sr: int) -> np.ndarray:
    """``y`` as float32 mono at musicnn's rate, or a ValueError naming what was received."""
    if sr != MUSICNN_SAMPLE_RATE:
        raise ValueError(f"musicnn needs audio at {MUSICNN_SAMPLE_RATE} Hz, got sr={sr}; resample first "
                         f"(features.resample_audio) or use window_embedding, which resamples")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"musicnn expects mono audio of shape (n_samples,), got shape {y.shape}")
    return y


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """librosa's Slaney mel filters for musicnn's STFT, (96, 257) float32, read-only."""
    filters = librosa.filters.mel(sr=MUSICNN_SAMPLE_RATE, n_fft=MUSICNN_N_FFT, n_mels=MUSICNN_N_MELS)
    filters.flags.writeable = False
    return filters


def log_mel(y: np.ndarray, sr: int = MUSICNN_SAMPLE_RATE) -> np.ndarray:
    """musicnn's input representation: the log-compressed mel power spectrogram, time first.

    Exactly musicnn 0.1.0's ``batch_data``: ``librosa.feature.melspectrogram(n_fft=512,
    hop_length=256, n_mels=96)`` (power 2, Slaney mel, centred frames), transposed, rounded
    through float16 as musicnn stored it, then ``log10(10000 x + 1)``.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at 16 kHz.
    sr : int
        Must be 16000: no silent resampling here.

    Returns
    -------
    np.ndarray, shape (1 + n_samples // 256, 96), float32
    """
    y = _check_input(y, sr)
    if librosa is None:
        raise ImportError("log_mel() needs librosa; install it with `pip install 'librosa>=0.10.2,<0.12'`")
    # librosa.feature.melspectrogram's own steps, with the mel filters built once per process
    # (melspectrogram rebuilds them on every call: ~0.5 ms, a window's worth of STFT).
    power = np.abs(librosa.stft(y, n_fft=MUSICNN_N_FFT, hop_length=MUSICNN_HOP_LENGTH)) ** 2
    mel = np.einsum("...ft,mf->...mt", power, _mel_filters(), optimize=True).T
    # musicnn casts the spectrogram to float16 before the log, so the round trip is part of its
    # input. Back to float32 before scaling: under NumPy 2, 10000 * float16 stays float16 and
    # overflows to inf.
    mel = mel.astype(np.float16).astype(np.float32)
    return np.log10(10000.0 * mel + 1.0).astype(np.float32)


def log_mel_patches(y: np.ndarray, sr: int = MUSICNN_SAMPLE_RATE) -> np.ndarray:
    """Cut :func:`log_mel` into musicnn's non-overlapping 187-frame patches.

    As musicnn's ``extractor(..., input_length=3, input_overlap=False)``: patch k holds frames
    ``[187 k, 187 k + 187)``; frames after the last whole patch are dropped.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at 16 kHz, at least :data:`PATCH_SAMPLES` (47,616) samples long.
    sr : int
        Must be 16000.

    Returns
    -------
    np.ndarray, shape (n_patches, 187, 96), float32
        ``n_patches = (1 + n_samples // 256) // 187``.
    """
    y = _check_input(y, sr)
    n_samples = y.shape[0]
    if n_samples < PATCH_SAMPLES:
        raise ValueError(f"audio of {n_samples} samples ({n_samples / MUSICNN_SAMPLE_RATE:.3f} s) is shorter "
                         f"than one musicnn patch ({PATCH_SAMPLES} samples at {MUSICNN_SAMPLE_RATE} Hz); "
                         f"pad it (window_embedding repeats it)")
    spec = log_mel(y, sr)
    n_patches = spec.shape[0] // PATCH_FRAMES
    return np.ascontiguousarray(spec[:n_patches * PATCH_FRAMES].reshape(n_patches, PATCH_FRAMES, MUSICNN_N_MELS))


# --------------------------------------------------------------------------------------------
# Inference precision
# --------------------------------------------------------------------------------------------

#: Accepted values of ``precision``: see :func:`resolve_precision`.
PRECISIONS = ("auto", "fp32", "bf16", "int8")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(precision: str = "auto", device: Union[str, torch.device, None] = None) -> str:
    """The precision the network will run in: ``"fp32"``, ``"bf16"`` or ``"int8"``.

    ``"auto"`` on a CPU gives ``"int8"`` when it has AVX-512 VNNI and BF16 (``avx512_vnni`` and
    ``avx512_bf16`` in :func:`cpu_flags`: e.g. AMD Zen 4, Intel Cooper Lake and later),
    ``"bf16"`` with AVX-512 BF16 or AMX only, else ``"fp32"``; on any other device ``"fp32"``.
    An explicit ``"fp32"``, ``"bf16"`` or ``"int8"`` is returned as given (``"int8"`` is CPU only).

    Parameters
    ----------
    precision : str
        One of :data:`PRECISIONS`.
    device : str or torch.device, optional
        Where the network runs (default CPU).

    Returns
    -------
    str
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    on_cpu = device is None or torch.device(device).type == "cpu"
    if precision == "int8" and not on_cpu:
        raise ValueError(f"precision='int8' runs on CPU only, got device {device}")
    if precision != "auto":
        return precision
    flags = cpu_flags()
    if not on_cpu or not torch.backends.mkldnn.is_available():
        return "fp32"
    if {"avx512_vnni", "avx512_bf16"} <= flags:
        return "int8"
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "bf16"
    return "fp32"


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class MusiCNNOutput(NamedTuple):
    """What :meth:`MusiCNN.forward` returns for a batch of B patches."""

    #: (B, 50) tag logits, in :data:`MSD_TAGS` order.
    logits: torch.Tensor
    #: (B, 50) tag probabilities: sigmoid of the logits.
    taggram: torch.Tensor
    #: (B, 200) the batch-normalised penultimate dense layer: the embedding.
    penultimate: torch.Tensor
    #: (B, 753) mean over time of the mid-end's features.
    mean_pool: torch.Tensor
    #: (B, 753) max over time of the mid-end's features.
    max_pool: torch.Tensor


class _FrequencyPooledConv(nn.Module):
    """Conv2d over (time, mel) -> ReLU -> batch norm -> max over the mel axis.

    musicnn applies batch norm after the ReLU; the max must come after both (a negative
    batch-norm scale would turn it into a min). ``time_padding`` is (before, after) in frames.
    """

    def __init__(self, out_channels: int, kernel_size: tuple, time_padding: tuple):
        super().__init__()
        self.time_padding = tuple(time_padding)
        self.conv = nn.Conv2d(1, out_channels, kernel_size)
        self.bn = nn.BatchNorm2d(out_channels, eps=_TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, 96) -> (B, out_channels, T)."""
        x = F.pad(x, (0, 0) + self.time_padding)
        if self.bn.training:
            return self.bn(F.relu(self.conv(x))).amax(dim=3)
        # With running statistics, ReLU and batch norm are monotone per channel, so pooling first
        # gives the same numbers at a fraction of the cost: the max over mel of BN(ReLU(c)) is
        # BN(ReLU(max c)) where the batch-norm scale is >= 0 and BN(ReLU(min c)) where it is < 0.
        # The min is taken as -max(-c), with the sign folded into the kernel (negation is exact
        # in floating point), so one max-reduction serves every channel.
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        sign = torch.where(scale >= 0, 1.0, -1.0).to(x.dtype)
        pooled = F.conv2d(x, self.conv.weight * sign[:, None, None, None], self.conv.bias * sign).amax(dim=3)
        return F.batch_norm(F.relu(pooled * sign[:, None]), self.bn.running_mean, self.bn.running_var,
                            self.bn.weight, self.bn.bias, False, 0.0, self.bn.eps)

    # -- low-precision inference (MusiCNN.embed with precision "bf16" or "int8") --------------------
    #
    # The convolution as one matrix product: the sign-folded kernels (C, kh*kw) times the input's
    # (kh x kw) windows at every (patch, frame, mel position), (kh*kw, B*T*M'), gives (C, B*T*M'),
    # where the max over mel is a reduction over the last, contiguous axis (the cheap one).

    def _low_precision_weights(self, precision: str):
        """(sign, bn scale, kernels (C, kh*kw) in bf16, or (int8 kernels, per-channel scale, row sums)).

        Cached; rebuilt whenever the weights change (load_state_dict bumps their version).
        """
        key = (precision, self.conv.weight.device)
        stamp = tuple((t.data_ptr(), t._version) for t in (self.conv.weight, self.conv.bias, self.bn.weight,
                                                            self.bn.running_var))
        cache = self.__dict__.setdefault("_low_precision_cache", {})
        hit = cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with torch.inference_mode(False), torch.no_grad():
            scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
            sign = torch.where(scale >= 0, 1.0, -1.0)
            kernels = self.conv.weight.reshape(self.conv.out_channels, -1) * sign[:, None]   # (C, kh*kw)
            if precision == "int8":
                # Symmetric per-channel int8 kernels; their row sums serve the input's zero point.
                w_scale = kernels.abs().amax(1).clamp_min(1e-12) / 127.0
                q = torch.round(kernels / w_scale[:, None]).to(torch.int8)
                weights = (q, w_scale, q.sum(1, dtype=torch.int32))
            else:
                weights = kernels.to(torch.bfloat16).contiguous()
            value = (sign, scale, weights)
        cache[key] = (stamp, value)
        return value

    def _windows(self, padded: torch.Tensor, pad: int) -> torch.Tensor:
        """The convolution's input windows, rows ordered (patch, frame, mel position): (B*T*M', kh*kw).

        ``padded`` is the input with ``pad`` frames each side, (B, T + 2 pad, 96) for the timbral
        blocks, mel first, (B, 96, T + 2 pad), for the temporal ones (kernels one band wide: their
        windows are runs along time, copied fastest from that layout).
        """
        kh, kw = self.conv.kernel_size
        before, after = self.time_padding
        if kw == 1:
            x = padded[:, :, pad - before: padded.shape[2] - pad + after]
            return x.unfold(2, kh, 1).permute(0, 2, 1, 3).reshape(-1, kh)
        x = padded[:, pad - before: padded.shape[1] - pad + after]
        return x.unfold(1, kh, 1).unfold(2, kw, 1).reshape(-1, kh * kw)

    def _finish(self, pooled: torch.Tensor, sign: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Max-pooled sign-folded convolution (C, B, T) float32, no bias -> ReLU -> batch norm, (B, C, T)."""
        c = (slice(None), None, None)
        x = F.relu((pooled + (self.conv.bias * sign)[c]) * sign[c])
        return ((x - self.bn.running_mean[c]) * scale[c] + self.bn.bias[c]).transpose(0, 1)

    def pooled_bf16(self, padded: torch.Tensor, pad: int, batch: int, frames: int) -> torch.Tensor:
        """The block's output (B, C, T) with the convolution in bfloat16; ``padded`` as in :meth:`_windows`, bf16."""
        sign, scale, weights = self._low_precision_weights("bf16")
        # Widened before the max: torch's bf16 reductions are ~15x slower than its float32 ones here.
        pooled = torch.stack([(weights @ self._windows(one, pad).t()).view(weights.shape[0], frames, -1).float().amax(2)
                              for one in padded.split(1)], dim=1)          # (C, B, T)
        return self._finish(pooled, sign, scale)

    def pooled_int8(self, padded: torch.Tensor, pad: int, batch: int, frames: int, x_scale: torch.Tensor,
                    zero_point: torch.Tensor) -> torch.Tensor:
        """The block's output (B, C, T) with the convolution in int8 (int32 sums).

        ``padded`` (as in :meth:`_windows`) is the input quantised per patch, x = x_scale * (q -
        zero_point), padded with the zero point (exactly 0.0). The max over mel is taken on the
        integer sums: the dequantisation that follows is per patch and channel and positive, so it
        commutes with it.
        """
        sign, scale, (weights, w_scale, w_sums) = self._low_precision_weights("int8")
        # One product per patch: two patches' windows (5.8 MB for timbral_74) and int32 sums (18 MB)
        # fall out of this CPU's caches, and oneDNN then runs at half speed (measured: 7.7-9.2 ms
        # per patch for timbral_74 at 2-4 patches per product, 3.4-4.0 ms at one).
        acc = torch.stack([torch._int_mm(weights, self._windows(one, pad).t()).view(weights.shape[0], frames, -1).amax(2)
                           for one in padded.split(1)], dim=1)             # (C, B, T) int32
        acc = acc - zero_point.to(torch.int32)[None, :, None] * w_sums[:, None, None]
        return self._finish(acc.float() * (x_scale[None, :, None] * w_scale[:, None, None]), sign, scale)


class _MidEndConv(nn.Module):
    """Conv1d over time (7 frames, zero-padded 3 + 3) -> ReLU -> batch norm.

    musicnn writes these as 2-D convolutions whose kernel spans the whole feature axis, which
    is a 1-D convolution with the features as input channels.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=7, padding=3)
        self.bn = nn.BatchNorm1d(out_channels, eps=_TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, T) -> (B, out_channels, T)."""
        return self.bn(F.relu(self.conv(x)))


_FRONT_BLOCK_NAMES = ("timbral_74", "timbral_77", "temporal_128", "temporal_64", "temporal_32")
#: The front-end blocks that precision "int8" runs in int8 (99% of the front end's arithmetic):
#: all but temporal_32, whose 32-tap int8 kernels alone cost the most accuracy (per-patch cosine
#: 0.9989 with the rest in bf16); it stays in bf16. With these four in int8: cosine >= 0.9994 on
#: the reference patches; without timbral_74 too, >= 0.9996 on every GTZAN mini-dev window (against
#: 0.9975) but 2.0x fp32's speed instead of 2.8x.
_INT8_BLOCKS = frozenset(_FRONT_BLOCK_NAMES[:4])


def _tf_same_padding(kernel: int) -> tuple:
    """TensorFlow's "SAME" padding at stride 1: the odd frame of an even kernel goes at the end."""
    return ((kernel - 1) // 2, kernel // 2)


class MusiCNN(nn.Module):
    """musicnn's ``MSD_musicnn`` model (inference), input patches of log-mel frames.

    Layers (names follow musicnn's ``models.py``: ``timbral_74`` spans 0.4 x 96 = 38 mel bands,
    ``timbral_77`` 0.7 x 96 = 67; ``temporal_N`` spans N frames)::

        input_bn                    one scalar batch norm over the whole patch
        timbral_74, timbral_77      204 filters, 7 x 38 / 7 x 67, time padded 3 + 3, valid in mel
        temporal_128/64/32          51 filters, N x 1, TF "SAME" padding
        -> concatenated: 561 channels over time
        midend1 (561 -> 64), midend2 (64 -> 64, + residual), midend3 (64 -> 64, + residual)
        -> concatenated with the front end: 753 channels
        max and mean over time, interleaved (max0, mean0, max1, ...) as TF's flatten leaves them
        pool_bn (1506) -> penultimate (dense 200, ReLU) -> penultimate_bn -> tags (dense 50)

    Every block is convolution -> ReLU -> batch norm (musicnn's order) with TF's epsilon 1e-3.
    The dropouts of training are identities here.

    Parameters
    ----------
    frozen : bool
        When True (the default) :meth:`train` keeps the network in eval mode, so a parent model's
        ``.train()`` cannot switch the batch norms to batch statistics or move their running
        averages; set ``net.frozen = False`` to fine-tune it.
    """

    def __init__(self, frozen: bool = True):
        super().__init__()
        self.frozen = frozen
        self.input_bn = nn.BatchNorm2d(1, eps=_TF_BN_EPS)
        self.timbral_74 = _FrequencyPooledConv(204, (7, int(0.4 * MUSICNN_N_MELS)), (3, 3))
        self.timbral_77 = _FrequencyPooledConv(204, (7, int(0.7 * MUSICNN_N_MELS)), (3, 3))
        self.temporal_128 = _FrequencyPooledConv(51, (128, 1), _tf_same_padding(128))
        self.temporal_64 = _FrequencyPooledConv(51, (64, 1), _tf_same_padding(64))
        self.temporal_32 = _FrequencyPooledConv(51, (32, 1), _tf_same_padding(32))
        n_front = 2 * 204 + 3 * 51
        self.midend1 = _MidEndConv(n_front, 64)
        self.midend2 = _MidEndConv(64, 64)
        self.midend3 = _MidEndConv(64, 64)
        self.n_features = n_front + 3 * 64  # 753
        self.pool_bn = nn.BatchNorm1d(2 * self.n_features, eps=_TF_BN_EPS)
        self.penultimate = nn.Linear(2 * self.n_features, EMBEDDING_SIZE)
        self.penultimate_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=_TF_BN_EPS)
        self.tags = nn.Linear(EMBEDDING_SIZE, len(MSD_TAGS))
        if frozen:
            self.eval()

    def train(self, mode: bool = True) -> "MusiCNN":
        return super().train(mode and not self.frozen)

    def forward(self, patches: torch.Tensor) -> MusiCNNOutput:
        """Run the network on log-mel patches.

        Parameters
        ----------
        patches : torch.Tensor, shape (B, T, 96)
            :func:`log_mel_patches` output (T = 187 as trained; other lengths work as in musicnn).

        Returns
        -------
        MusiCNNOutput
            logits, taggram (B, 50); penultimate (B, 200); mean_pool, max_pool (B, 753).
        """
        if patches.dim() != 3 or patches.shape[-1] != MUSICNN_N_MELS:
            raise ValueError(f"MusiCNN expects patches of shape (batch, frames, {MUSICNN_N_MELS}), "
                             f"got {tuple(patches.shape)}")
        x = self.input_bn(patches.unsqueeze(1))                       # (B, 1, T, 96)
        front = torch.cat([self.timbral_74(x), self.timbral_77(x), self.temporal_128(x),
                           self.temporal_64(x), self.temporal_32(x)], dim=1)  # (B, 561, T)
        return self._mid_and_back(front)

    def _mid_and_back(self, front: torch.Tensor, low_precision: bool = False) -> MusiCNNOutput:
        """The mid-end and back end on the front end's (B, 561, T) features.

        ``low_precision``: the mid-end convolutions under bfloat16 autocast (the bf16 and int8
        paths of :meth:`embed`; 1.3 -> 0.8 ms per patch on one thread here, and the int8 path's
        cosine to fp32 on GTZAN windows unchanged: min 0.99748 -> 0.99780, mean 0.99973 -> 0.99972).
        """
        with torch.autocast(front.device.type, dtype=torch.bfloat16, enabled=low_precision):
            m1 = self.midend1(front)
            m2 = self.midend2(m1) + m1
            m3 = self.midend3(m2) + m2
        features = torch.cat([front, m1.float(), m2.float(), m3.float()], dim=1)  # (B, 753, T)
        max_pool = features.amax(dim=2)
        mean_pool = features.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # (B, 1506), interleaved
        penultimate = self.penultimate_bn(F.relu(self.penultimate(self.pool_bn(pooled))))
        logits = self.tags(penultimate)
        return MusiCNNOutput(logits, torch.sigmoid(logits), penultimate, mean_pool, max_pool)

    def embed(self, patches: torch.Tensor, precision: str = "auto") -> torch.Tensor:
        """The 200-d penultimate embedding of each patch: (B, T, 96) -> (B, 200).

        Parameters
        ----------
        patches : torch.Tensor, shape (B, T, 96)
        precision : str
            ``"fp32"``: :meth:`forward`, exactly. ``"auto"`` (the default; :func:`resolve_precision`),
            ``"bf16"`` or ``"int8"``: under ``torch.no_grad`` / ``torch.inference_mode``, the
            front-end convolutions in low precision and the mid-end convolutions in bf16; the back
            end stays float32. Measured against fp32 on the 40 reference patches
            (``benchmarks/bench_precision.py``): per-patch cosine >= 0.99962 for bf16 and >= 0.99925
            for int8 (mean 0.99987 and 0.99963); on GTZAN mini-dev's 250 6-s windows >= 0.99951 for
            bf16 and >= 0.99899 for int8 (mean 0.99991 and 0.99977; its timbral_74 kernels in int8
            cost the most), the same genre from either on all 50 recordings. With gradients
            enabled (training, even with the front end frozen) every precision runs as fp32.

        Returns
        -------
        torch.Tensor, shape (B, 200), float32
        """
        mode = resolve_precision(precision, patches.device)
        if mode == "fp32" or torch.is_grad_enabled():
            return self.forward(patches).penultimate
        if patches.dim() != 3 or patches.shape[-1] != MUSICNN_N_MELS:
            raise ValueError(f"MusiCNN expects patches of shape (batch, frames, {MUSICNN_N_MELS}), "
                             f"got {tuple(patches.shape)}")
        x = self.input_bn(patches.unsqueeze(1)).squeeze(1)            # (B, T, 96) float32
        batch, frames = x.shape[:2]
        pad = max(max(b.time_padding) for b in self._front_blocks())
        padded = F.pad(x, (0, 0, pad, pad)).to(torch.bfloat16)
        mel_first = padded.transpose(1, 2).contiguous()               # (B, 96, T + 2 pad)
        if mode == "int8":
            # Asymmetric per-patch quantisation of the input: 255 steps over [min(x, 0), max(x, 0)].
            lo, hi = x.amin(dim=(1, 2)).clamp_max(0.0), x.amax(dim=(1, 2)).clamp_min(0.0)
            x_scale = (hi - lo).clamp_min(1e-8) / 255.0
            zero_point = torch.round(-128.0 - lo / x_scale)
            q = F.pad(torch.round(x / x_scale[:, None, None]) + zero_point[:, None, None], (0, 0, pad, pad))
            q[:, :pad], q[:, q.shape[1] - pad:] = zero_point[:, None, None], zero_point[:, None, None]
            quantised = q.clamp_(-128, 127).to(torch.int8)
            quantised_mel_first = quantised.transpose(1, 2).contiguous()
        parts = []
        for name, block in zip(_FRONT_BLOCK_NAMES, self._front_blocks()):
            timbral = block.conv.kernel_size[1] > 1
            if mode == "int8" and name in _INT8_BLOCKS:
                parts.append(block.pooled_int8(quantised if timbral else quantised_mel_first, pad, batch, frames,
                                               x_scale, zero_point))
            else:
                parts.append(block.pooled_bf16(padded if timbral else mel_first, pad, batch, frames))
        return self._mid_and_back(torch.cat(parts, dim=1), low_precision=True).penultimate

    def _front_blocks(self):
        return tuple(getattr(self, name) for name in _FRONT_BLOCK_NAMES)


def load_musicnn(path: Union[str, Path] = DEFAULT_WEIGHTS) -> MusiCNN:
    """A :class:`MusiCNN` in eval mode with the converted MSD weights.

    Parameters
    ----------
    path : str or Path
        A safetensors file written by ``convert_musicnn.py`` (default: the one beside this module).

    Returns
    -------
    MusiCNN
    """
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors comes with transformers
        raise ImportError("load_musicnn() needs safetensors; `pip install safetensors`") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"musicnn weights not found at {path}; create them with "
                                f"`python convert_musicnn.py --out {path}`")
    net = MusiCNN()
    missing, unexpected = net.load_state_dict(load_file(str(path)), strict=False)
    # The converted file holds the TF variables only; PyTorch's batch-norm step counters are
    # not weights (unused in eval) and keep their initial value.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match MusiCNN: missing {missing}, unexpected {unexpected}")
    return net.eval()


# --------------------------------------------------------------------------------------------
# Embeddings of windows of audio
# --------------------------------------------------------------------------------------------


def window_patches(y: np.ndarray, sr: int) -> np.ndarray:
    """The musicnn patches of one window of audio at any rate.

    Resampled to 16 kHz; a window shorter than one patch is repeated (``np.tile``, then cut) up
    to :data:`PATCH_SAMPLES`, as musicnn's training repeat-padded short clips; then
    :func:`log_mel_patches`.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio, not empty.
    sr : int
        Its sample rate.

    Returns
    -------
    np.ndarray, shape (n_patches >= 1, 187, 96), float32
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"a window must be non-empty mono audio of shape (n_samples,), got shape {y.shape}")
    y = resample_audio(y, sr, MUSICNN_SAMPLE_RATE)
    if y.size < PATCH_SAMPLES:
        # musicnn's training repeat-padded clips shorter than one patch ("pad_short": "repeat-pad").
        y = np.tile(y, -(-PATCH_SAMPLES // y.size))[:PATCH_SAMPLES]
    return log_mel_patches(y, MUSICNN_SAMPLE_RATE)


def song_windows_16k(y: np.ndarray, sr: int, starts: Sequence[int], window_length: int) -> List[np.ndarray]:
    """Windows of a song at musicnn's 16 kHz, the song resampled once (not once per window).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        The whole song, mono, at ``sr``.
    sr : int
    starts : sequence of int
        Each window's first sample at ``sr`` (``features.extract_song``'s ``starts``).
    window_length : int
        The windows' length in samples at ``sr``. A song shorter than one window is repeated to
        fill it, as ``features.split_windows`` repeats it at ``sr``.

    Returns
    -------
    list of np.ndarray
        One array of ``round(window_length * 16000 / sr)`` samples per start (views of the
        resampled song, or the repeated song).
    """
    y16 = resample_audio(np.asarray(y, dtype=np.float32), sr, MUSICNN_SAMPLE_RATE)
    win16 = int(round(window_length * MUSICNN_SAMPLE_RATE / sr))
    if y16.size < win16:
        return [np.resize(y16, win16) for _ in starts]
    # Rounding may put the end-aligned tail window one sample past the resampled song's end.
    return [y16[s:s + win16] for s in (min(int(round(int(s0) * MUSICNN_SAMPLE_RATE / sr)), y16.size - win16)
                                       for s0 in starts)]


def patches_per_pass(precision: str = "fp32", device: Union[str, torch.device, None] = None) -> int:
    """How many patches to give the network per forward pass, for the device and torch's thread count.

    On a GPU: 256 (a few hundred MB of activations; enough patches to fill it). On the CPU, fp32,
    on one thread small passes win: they keep the timbral convolutions' output (9 MB per patch)
    in cache (measured 56-63 ms per patch at 1-2 patches per pass, 89-120 ms at 8 or more).
    With several threads each pass pays for synchronising them, and 8 or more patches per pass
    win (measured on 2 threads: 0.31 CPU s per patch at 2 per pass, 0.14-0.17 at 8-20).
    The bf16 and int8 paths run one matrix product per patch whatever the pass size (see
    ``_FrequencyPooledConv.pooled_int8``), so larger passes only share the rest of the network's
    per-pass cost: int8 measured 12.4, 12.0 and 10.8 ms per patch at 2, 10 and 20 per pass on one
    thread, 8.2, 7.2 and 6.7 on two; 32 per pass.

    Parameters
    ----------
    precision : str
        The precision the passes run in (:func:`resolve_precision` resolves ``"auto"``).
    device : str or torch.device, optional
        Where the network runs (default: the CPU).

    Returns
    -------
    int
        GPU: 256; CPU fp32: 2 on one thread, 16 otherwise; CPU bf16 and int8: 32.
    """
    if device is not None and torch.device(device).type != "cpu":
        return 256
    if resolve_precision(precision) == "fp32":
        return 2 if torch.get_num_threads() == 1 else 16
    return 32


def patch_embeddings(net: MusiCNN, per_window: Sequence[np.ndarray], batch_size: Optional[int] = None,
                     precision: str = "auto") -> np.ndarray:
    """musicnn embedding of each window from its patches: the mean penultimate layer over them.

    Every window's patches go through the network in one loop, ``batch_size`` patches per
    forward pass, so the windows of many songs can share passes (``classify.py --device cuda``).

    Parameters
    ----------
    net : MusiCNN
        On the device it should run on.
    per_window : sequence of np.ndarray, each shape (n_patches_i >= 1, 187, 96)
        :func:`window_patches` of each window.
    batch_size : int
        Patches per forward pass; default :func:`patches_per_pass` for the network's device.
    precision : str
        The network's precision (:meth:`MusiCNN.embed`): ``"auto"`` (the default) is the fastest
        the device supports (:func:`resolve_precision`); ``"fp32"`` is exact and the same on every
        CPU: use it for training inputs (cached embeddings) and wherever results must not depend
        on the machine.

    Returns
    -------
    np.ndarray, shape (n_windows, 200), float32
    """
    param = next(net.parameters())
    precision = resolve_precision(precision, param.device)
    batch_size = patches_per_pass(precision, param.device) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not len(per_window):
        return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
    patches = torch.from_numpy(np.concatenate(per_window))
    with torch.inference_mode():
        emb = torch.cat([net.embed(patches[i:i + batch_size].to(param.device, param.dtype), precision).float().cpu()
                         for i in range(0, len(patches), batch_size)])
    counts = torch.tensor([len(p) for p in per_window])
    owner = torch.repeat_interleave(torch.arange(len(per_window)), counts)
    sums = torch.zeros(len(per_window), EMBEDDING_SIZE).index_add_(0, owner, emb)
    return (sums / counts[:, None]).numpy().astype(np.float32)


def window_embeddings(net: MusiCNN, windows: Sequence[np.ndarray], sr: int,
                      batch_size: Optional[int] = None, precision: str = "auto") -> np.ndarray:
    """musicnn embedding of each window: the mean penultimate layer over the window's patches.

    Each window is resampled to 16 kHz, repeated up to one patch if shorter (as musicnn's training
    padded short clips), cut into non-overlapping patches (:func:`window_patches`); then
    :func:`patch_embeddings`. A song's windows are best cut from the song at 16 kHz
    (:func:`song_windows_16k`, as ``song.song_inputs`` does) rather than resampled one by one.

    Parameters
    ----------
    net : MusiCNN
    windows : sequence of np.ndarray, each shape (n_samples_i,), or np.ndarray (n_windows, n_samples)
        Mono audio; windows may differ in length.
    sr : int
        Sample rate of the windows (any rate; 16 kHz skips resampling).
    batch_size, precision
        As in :func:`patch_embeddings`.

    Returns
    -------
    np.ndarray, shape (n_windows, 200), float32
    """
    return patch_embeddings(net, [window_patches(w, sr) for w in windows], batch_size, precision)


def window_embedding(net: MusiCNN, y: np.ndarray, sr: int, precision: str = "auto") -> np.ndarray:
    """musicnn embedding of one window of audio: see :func:`window_embeddings`.

    Parameters
    ----------
    net : MusiCNN
    y : np.ndarray, shape (n_samples,)
        Mono audio at any rate.
    sr : int
    precision : str
        As in :func:`window_embeddings`.

    Returns
    -------
    np.ndarray, shape (200,), float32
    """
    return window_embeddings(net, [y], sr, precision=precision)[0]
