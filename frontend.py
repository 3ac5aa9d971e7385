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

Only torch and numpy are needed to import this file and run the network; ``log_mel`` and the
window helpers need librosa (imported inside ``try:``, so a Hub user with patches or embeddings
already computed does not need it).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

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
    "window_patches", "window_embedding", "window_embeddings", "patches_per_pass",
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
    mel = librosa.feature.melspectrogram(y=y, sr=MUSICNN_SAMPLE_RATE, n_fft=MUSICNN_N_FFT,
                                         hop_length=MUSICNN_HOP_LENGTH, n_mels=MUSICNN_N_MELS).T
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
        m1 = self.midend1(front)
        m2 = self.midend2(m1) + m1
        m3 = self.midend3(m2) + m2
        features = torch.cat([front, m1, m2, m3], dim=1)             # (B, 753, T)
        max_pool = features.amax(dim=2)
        mean_pool = features.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # (B, 1506), interleaved
        penultimate = self.penultimate_bn(F.relu(self.penultimate(self.pool_bn(pooled))))
        logits = self.tags(penultimate)
        return MusiCNNOutput(logits, torch.sigmoid(logits), penultimate, mean_pool, max_pool)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """The 200-d penultimate embedding of each patch: (B, T, 96) -> (B, 200)."""
        return self.forward(patches).penultimate


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


def patches_per_pass() -> int:
    """How many patches to give the network per forward pass on CPU, for torch's thread count.

    On one thread small passes win: they keep the timbral convolutions' output (9 MB per patch)
    in cache (measured 56-63 ms per patch at 1-2 patches per pass, 89-120 ms at 8 or more).
    With several threads each pass pays for synchronising them, and 8 or more patches per pass
    win (measured on 2 threads: 0.31 CPU s per patch at 2 per pass, 0.14-0.17 at 8-20).

    Returns
    -------
    int
        2 on one thread, 16 otherwise.
    """
    return 2 if torch.get_num_threads() == 1 else 16


def window_embeddings(net: MusiCNN, windows: Sequence[np.ndarray], sr: int,
                      batch_size: Optional[int] = None) -> np.ndarray:
    """musicnn embedding of each window: the mean penultimate layer over the window's patches.

    Each window is resampled to 16 kHz, repeated up to one patch if shorter (as musicnn's training
    padded short clips), cut into non-overlapping patches; all windows' patches then go through the
    network in one loop, ``batch_size`` patches per forward pass.

    Parameters
    ----------
    net : MusiCNN
    windows : sequence of np.ndarray, each shape (n_samples_i,), or np.ndarray (n_windows, n_samples)
        Mono audio; windows may differ in length.
    sr : int
        Sample rate of the windows (any rate; 16 kHz skips resampling).
    batch_size : int
        Patches per forward pass; default :func:`patches_per_pass` (for CPU; on a GPU pass more).

    Returns
    -------
    np.ndarray, shape (n_windows, 200), float32
    """
    batch_size = patches_per_pass() if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_window = [window_patches(w, sr) for w in windows]
    if not per_window:
        return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
    patches = torch.from_numpy(np.concatenate(per_window))
    param = next(net.parameters())
    with torch.inference_mode():
        emb = torch.cat([net.embed(patches[i:i + batch_size].to(param.device, param.dtype)).float().cpu()
                         for i in range(0, len(patches), batch_size)])
    counts = torch.tensor([len(p) for p in per_window])
    owner = torch.repeat_interleave(torch.arange(len(per_window)), counts)
    sums = torch.zeros(len(per_window), EMBEDDING_SIZE).index_add_(0, owner, emb)
    return (sums / counts[:, None]).numpy().astype(np.float32)


def window_embedding(net: MusiCNN, y: np.ndarray, sr: int) -> np.ndarray:
    """musicnn embedding of one window of audio: see :func:`window_embeddings`.

    Parameters
    ----------
    net : MusiCNN
    y : np.ndarray, shape (n_samples,)
        Mono audio at any rate.
    sr : int

    Returns
    -------
    np.ndarray, shape (200,), float32
    """
    return window_embeddings(net, [y], sr)[0]
