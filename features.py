"""Audio loading and the 59-dimensional genre feature vector.

The vector follows the seed's order (see :data:`FEATURE_NAMES`): MFCC mean (20), MFCC std (20),
chroma mean (12, C..B), spectral centroid, bandwidth, rolloff, zero-crossing rate, RMS, tempo and
harmonic ratio. Every value except the harmonic ratio equals what plain per-call librosa gives
(:func:`reference_features`, the seed notebook's computation) to 1e-4 relative; the fast path
computes one STFT per clip and derives every spectral feature from it.

Harmonic ratio
--------------
The reference separates the clip with ``librosa.effects.hpss`` (median filters of 31 frames
along time and 31 bins along frequency on the magnitude STFT, soft masks with power 2, inverse
STFT) and reports ``sum(y_harmonic**2) / sum(y**2)``. :func:`extract_features` computes the same
quantity in the spectral domain, without the inverse STFTs, on a spectrogram pooled along time by
:data:`HR_TIME_POOL` frames and along frequency by :data:`HR_FREQ_BANDS` (single bins up to 3/16
of the spectrum, then pairs, fours and eights of bins: a coarser grid where bins are many and
harmonics sparse)::

    E  = |STFT|**2 summed over each pooled cell                 (energy per band and pooled frame)
    M  = sqrt(E)
    H  = median of M over 31 // HR_TIME_POOL (odd) pooled frames along time   (harmonic estimate)
    P  = median of M over 31 bands along frequency                           (percussive estimate)
    m  = H**2 / (H**2 + P**2)                               (librosa's soft harmonic mask, power 2)
    harmonic_ratio = sum(E * m**2) / sum(E)

``E * m**2`` is the energy of the masked STFT, which is what the inverse STFT turns into
``y_harmonic``. The value lies in [0, 1]; 1 means purely tonal (steady partials), 0 purely
percussive or noisy. With ``HR_TIME_POOL = 3`` (time kernel 11 pooled frames = 33 frames) and
the frequency bands (416 rows instead of 1025 at n_fft 2048), over the 50 GTZAN mini-dev clips
its Pearson correlation with the reference is 0.9986 (30-s clips) and 0.9968 (5-s cuts), mean
absolute difference 0.015 and 0.018; with time pooling alone it was 0.9987 / 0.9970 at 2.2x the
cost of the filters, and without any pooling 0.9999 at ~9x. Tests check >= 0.98 on 40+ varied
clips.

Speed
-----
One STFT feeds everything, computed and consumed in cache-sized blocks of frames: a compiled
(numba) loop takes each block's power, mel bands (over their few non-zero bins), spectral shape,
tuning peaks and harmonic-ratio pooling while the block is in cache (:func:`_spectral_pass`).
The tempo takes one inverse FFT of the energy-weighted mean power spectrum instead of one per
frame, the zero-crossing rate sums crossings per hop, and the harmonic ratio's median filters
slide a sorted window down every column at once. Every value except the harmonic ratio is what
librosa computes (the STFT and the tuning bit for bit). ``benchmarks/bench_features.py`` prints
the speed against plain per-call librosa measured in the same run. numba compiles the loops on
first use and caches the machine code on disk (about a second, once per environment).

Optional dependencies
---------------------
This file ships in the Hub repo. Only numpy is needed to import it (for :data:`FEATURE_NAMES`
and friends); librosa, soundfile, scipy and numba (which librosa brings) are imported inside
``try:`` blocks and the audio
functions raise :class:`ImportError` with an install hint when they are missing.
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache
from typing import Dict, List, NamedTuple, Tuple, Union

import numpy as np

try:
    import librosa
except ImportError:  # pragma: no cover - exercised only without the audio extras
    librosa = None
try:
    import soundfile
except ImportError:  # pragma: no cover
    soundfile = None
try:
    import scipy.fft
except ImportError:  # pragma: no cover
    scipy = None
# Decoding files (and the errors and limits it shares with the checks below) lives in decoding.py;
# the names stay importable from here.
try:
    from .decoding import (MAX_AUDIO_SECONDS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError,  # noqa: F401
                           _check_output_size, _check_rates, _quiet_decoder, decode_audio)
except ImportError:
    from decoding import (MAX_AUDIO_SECONDS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError,  # noqa: F401
                          _check_output_size, _check_rates, _quiet_decoder, decode_audio)
try:  # librosa depends on numba, so it is there whenever the features can be computed at all
    import numba
except ImportError:  # pragma: no cover
    numba = None

__all__ = [
    "SAMPLE_RATE", "N_FFT", "HOP_LENGTH", "N_MFCC", "FEATURE_NAMES", "N_FEATURES", "FEATURE_GROUPS",
    "FEATURE_VERSION", "MIN_SECONDS", "MIN_RECORDING_SECONDS", "SILENCE_DBFS", "HR_TIME_POOL", "HR_FREQ_BANDS", "AudioError",
    "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE", "MAX_AUDIO_SECONDS",
    "CLIP_SECONDS", "MAX_CHANNELS", "as_mono_waveform", "load_audio", "resample_audio", "extract_features",
    "reference_features", "split_windows", "SongWindows", "extract_song", "extract_windows",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 22050
N_FFT = 2048
HOP_LENGTH = 512
N_MFCC = 20
#: Bump when the feature code changes what it computes: it is part of every cache key.
FEATURE_VERSION = "2"  # 2: harmonic ratio on the frequency-pooled grid (HR_FREQ_BANDS)
#: Shortest audio accepted (seconds).
MIN_SECONDS = 0.5
#: Shortest recording cut into windows (seconds); shorter ones are not repeated to a window.
MIN_RECORDING_SECONDS = 1.0
#: Audio whose peak is below this level (dB full scale) is "silent" and rejected.
SILENCE_DBFS = -90.0
#: Frames pooled along time before the harmonic-ratio median filters (see module docstring).
HR_TIME_POOL = 3
#: Bins pooled along frequency before the harmonic-ratio median filters: (upper edge as a
#: fraction of the spectrum, bins per group), from low to high. At 22,050 Hz with n_fft 2048:
#: single bins to 2.1 kHz, pairs to 4.1 kHz, fours to 8.3 kHz, eights above (416 rows, not 1025).
HR_FREQ_BANDS = ((3 / 16, 1), (3 / 8, 2), (3 / 4, 4), (1.0, 8))
_HPSS_KERNEL = 31  # librosa.effects.hpss default kernel, in frames and in bins

_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FEATURE_NAMES: Tuple[str, ...] = (
    tuple(f"mfcc_mean_{i}" for i in range(1, N_MFCC + 1))
    + tuple(f"mfcc_std_{i}" for i in range(1, N_MFCC + 1))
    + tuple(f"chroma_mean_{p}" for p in _PITCH_CLASSES)
    + ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff", "zero_crossing_rate", "rms",
       "tempo", "harmonic_ratio")
)
N_FEATURES = len(FEATURE_NAMES)
assert N_FEATURES == 59


def _feature_group(name: str) -> str:
    """'mfcc_mean_3' -> 'mfcc_mean', 'chroma_mean_C#' -> 'chroma', 'spectral_rolloff' -> 'spectral'."""
    if name.startswith(("mfcc_mean_", "mfcc_std_")):
        return name.rsplit("_", 1)[0]
    if name.startswith(("chroma_", "spectral_")):
        return name.split("_", 1)[0]
    return {"zero_crossing_rate": "zcr"}.get(name, name)


#: Group name -> indices into the feature vector, derived from FEATURE_NAMES (one source).
FEATURE_GROUPS: Dict[str, List[int]] = {}
for _index, _name in enumerate(FEATURE_NAMES):
    FEATURE_GROUPS.setdefault(_feature_group(_name), []).append(_index)
del _index, _name
#: Default analysis window (seconds): songs are cut into windows of this length, hop = length.
#: 5 s holds two to four bars at common tempi (stable tempo and chroma) and gives six windows per
#: 30-s GTZAN clip. The model's `config.clip_seconds` is what a trained model uses.
CLIP_SECONDS = 5.0
#: Largest number of channels a 2-D waveform may have (see :func:`as_mono_waveform`).
MAX_CHANNELS = 8

PathLike = Union[str, os.PathLike]


def _require_audio_deps(what: str) -> None:
    missing = [name for name, mod in (("librosa", librosa), ("scipy", scipy)) if mod is None]
    if what == "load_audio" and soundfile is None:
        missing.append("soundfile")
    if missing:
        raise ImportError(
            f"{what}() needs {', '.join(missing)}; install them with "
            f"`pip install 'librosa>=0.10.2,<0.12' 'soundfile>=0.13,<0.15' scipy`"
        )


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _jit(kernel):
    """Compile a loop kernel with numba, its machine code cached on disk (beside this file, or in
    the user's cache where that is read-only): a fresh environment pays a few seconds, once.
    Where no cache location is writable it compiles once per process instead. numba comes with
    librosa; without it a kernel would run as (slow) plain Python."""
    if numba is None:
        return kernel
    try:
        return numba.njit(cache=True, nogil=True)(kernel)
    except RuntimeError:  # "cannot cache function ...: no locator available" (read-only everywhere)
        return numba.njit(nogil=True)(kernel)


@_jit
def _finite_peak_kernel(y):  # pragma: no cover - compiled
    peak = 0.0
    for v in y:
        a = abs(v)
        if not a <= np.inf:  # NaN
            return False, np.inf
        if a > peak:
            peak = a
    return peak < np.inf, peak


def _finite_peak(y: np.ndarray) -> Tuple[bool, float]:
    """(every sample finite, largest absolute sample) of a 1-D float array, in one pass without
    temporaries (np.isfinite and np.abs would each allocate a copy of the song)."""
    finite, peak = _finite_peak_kernel(np.ascontiguousarray(y).reshape(-1))
    return bool(finite), float(peak)


def _check_signal(y: np.ndarray, sr: int, source: str) -> np.ndarray:
    """Validate a mono signal; return it as contiguous float32.

    Raises
    ------
    AudioError
        Not 1-D, empty, non-finite, shorter than :data:`MIN_SECONDS`, or silent.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise AudioError(f"{source}: expected mono audio of shape (n_samples,), got shape {y.shape}")
    if y.size == 0:
        raise AudioError(f"{source}: audio is empty (0 samples)")
    if not np.issubdtype(y.dtype, np.floating):
        raise AudioError(f"{source}: expected floating-point samples in [-1, 1], got dtype {y.dtype}")
    y = np.ascontiguousarray(y, dtype=np.float32)
    finite, peak = _finite_peak(y)
    if not finite:
        raise AudioError(f"{source}: audio contains NaN or infinite samples")
    min_samples = int(np.ceil(MIN_SECONDS * sr))
    if y.size < min_samples:
        raise AudioError(
            f"{source}: audio too short: {y.size} samples ({y.size / sr:.3f} s) at {sr} Hz, "
            f"need at least {MIN_SECONDS} s"
        )
    if peak < 10.0 ** (SILENCE_DBFS / 20.0):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        raise AudioError(f"{source}: audio is silent (peak {level} dBFS, threshold {SILENCE_DBFS} dBFS)")
    return y


def load_audio(path: PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1] at ``sr``.

    Reads every format in :data:`decoding.AUDIO_EXTENSIONS`: WAV, FLAC, OGG/Vorbis, Opus, MP3,
    AU/SND, AIFF through soundfile, and M4A/AAC/ALAC, WMA and the sound of MP4/WebM videos through
    PyAV when ``av`` is installed (no system ffmpeg either way). The file is decoded as a stream
    (:func:`decoding.decode_audio`): channels are averaged and other sample rates resampled with
    soxr (``soxr_hq``) block by block, so memory is the result plus one block.

    Parameters
    ----------
    path : str or os.PathLike
    sr : int
        Target sample rate.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32

    Raises
    ------
    AudioError
        The file is missing, not a regular file, not audio (an image, an archive, unrecognised
        content), cannot be decoded, declares an implausible sample rate, would resample to more
        than :data:`MAX_AUDIO_SECONDS`, or holds empty, non-finite, silent or too-short audio; the
        message names the file. Decoder notes never reach stderr.
    ImportError
        librosa, soundfile or scipy is not installed; :class:`decoding.MissingDecoderError` (an
        AudioError and an ImportError) names ``av`` for a file that needs it.
    """
    _require_audio_deps("load_audio")
    # The limit is read here, at the call, so that patching features.MAX_AUDIO_SECONDS applies.
    y = decode_audio(path, sr, max_seconds=MAX_AUDIO_SECONDS)
    return _check_signal(y, sr, str(path))


def resample_audio(y: np.ndarray, orig_sr: int, target_sr: int, *, source: str = "array") -> np.ndarray:
    """Resample a mono signal from ``orig_sr`` to ``target_sr`` (soxr_hq, as :func:`load_audio`).

    Returns the input as float32 unchanged when the rates are equal (no librosa needed then).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
    orig_sr, target_sr : int
        Each within [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`] Hz.
    source : str
        How errors name the input (a file path, or "array").

    Returns
    -------
    np.ndarray, shape (round(n_samples * target_sr / orig_sr),), float32

    Raises
    ------
    AudioError (a ValueError)
        A rate that is not positive or outside the plausible range, or an output longer than
        :data:`MAX_AUDIO_SECONDS` at ``target_sr``; raised before anything is allocated.
    """
    y = np.asarray(y, dtype=np.float32)
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"{source}: sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    if orig_sr == target_sr:
        return y
    _check_rates(orig_sr, target_sr, source)
    _check_output_size(y.shape[-1] if y.ndim else 0, orig_sr, target_sr, source, MAX_AUDIO_SECONDS)
    _require_audio_deps("resample_audio")
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def as_mono_waveform(audio, source: str = "array") -> np.ndarray:
    """A waveform from a caller, as mono float32: the one rule every audio entry point applies.

    - float arrays (any precision) are taken as they are (samples in [-1, 1]);
    - integer PCM is scaled by its dtype's range: int16 / 32768, int32 / 2**31, uint8 (x - 128) / 128;
    - bool, complex, object and string arrays are rejected;
    - 2-D arrays are multichannel and averaged to mono. The channel axis is the one of length
      <= :data:`MAX_CHANNELS` (8) while the other is longer, so (2, n) and (n, 2) both work; a
      shape where both or neither axis could be the channels (e.g. (4, 6) or (1000, 1000)) is
      ambiguous and rejected.

    Parameters
    ----------
    audio : np.ndarray, torch.Tensor or sequence of numbers
    source : str
        How errors name the input.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32

    Raises
    ------
    AudioError
        Unsupported dtype, more than 2 dimensions, an ambiguous 2-D shape or no samples; the
        message shows the shape and dtype received.
    """
    if hasattr(audio, "detach"):  # a torch tensor, without importing torch here
        audio = audio.detach().cpu().numpy()
    y = np.asarray(audio)
    got = f"got shape {y.shape}, dtype {y.dtype}"
    if y.dtype.kind == "f":
        y = y.astype(np.float32, copy=False)
    elif y.dtype.kind in "iu":
        info = np.iinfo(y.dtype)
        # the dtype's full range maps to [-1, 1): int16 32767 -> 0.99997, uint8 128 -> 0
        offset = (int(info.max) + 1) // 2 if y.dtype.kind == "u" else 0
        scale = float(int(info.max) + 1 - offset)
        y = ((y.astype(np.float64) - offset) / scale).astype(np.float32)
    else:
        raise AudioError(f"{source}: expected float samples in [-1, 1] or integer PCM, {got}")
    if y.ndim == 2:
        short = [axis for axis in (0, 1) if y.shape[axis] <= MAX_CHANNELS]
        if len(short) != 1:
            raise AudioError(f"{source}: expected mono (n,) or multichannel (channels, n) / (n, channels) audio "
                             f"with at most {MAX_CHANNELS} channels, {got} (ambiguous: transpose or mix it "
                             "down first)")
        y = y.mean(axis=short[0], dtype=np.float32)
    if y.ndim != 1:
        raise AudioError(f"{source}: expected a 1-D (mono) or 2-D (multichannel) waveform, {got}")
    if y.size == 0:
        raise AudioError(f"{source}: expected a non-empty waveform, {got}")
    return np.ascontiguousarray(y)


@lru_cache(maxsize=8)
def _mel_bands(sr: int, n_fft: int):
    """librosa's 128-band mel filter bank (the one melspectrogram uses) in sparse form: each band
    is a triangle over a few contiguous bins, and only those weights are kept (~60x fewer
    multiplications than the dense (128, n_bins) matrix).

    Returns
    -------
    first : np.ndarray, shape (128,), int64
        Each band's first bin.
    offsets : np.ndarray, shape (129,), int64
        Band ``m``'s weights are ``weights[offsets[m]:offsets[m + 1]]``, for bins ``first[m]`` on.
    weights : np.ndarray, float32
    """
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft)  # (128, 1 + n_fft // 2) float32
    first, rows = [], []
    for row in basis:
        nz = np.flatnonzero(row)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        first.append(lo)
        rows.append(row[lo:hi])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return np.asarray(first, dtype=np.int64), offsets, np.concatenate(rows).astype(np.float32)


@lru_cache(maxsize=256)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=12)  # (12, n_bins)


@lru_cache(maxsize=8)
def _fft_freqs(sr: int, n_fft: int) -> np.ndarray:
    return librosa.fft_frequencies(sr=sr, n_fft=n_fft)  # (n_bins,) float64


@lru_cache(maxsize=8)
def _tempo_constants(sr: int, hop_length: int):
    """librosa.feature.tempo's defaults: 8-s autocorrelation window (frames), its Hann window, the
    BPM of each lag, and the log-normal prior around 120 BPM with lags above 320 BPM excluded."""
    win_length = int(librosa.time_to_frames(8.0, sr=sr, hop_length=hop_length))
    window = librosa.filters.get_window("hann", win_length, fftbins=True)  # float64, as tempogram
    bpms = librosa.tempo_frequencies(win_length, hop_length=hop_length, sr=sr)
    with np.errstate(divide="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(120.0)) / 1.0) ** 2
    logprior[: int(np.argmax(bpms < 320.0))] = -np.inf
    return win_length, window, bpms, logprior


def _frames(y: np.ndarray, frame_length: int, hop_length: int, pad_mode: str) -> np.ndarray:
    """Centred frames of ``y`` as a strided view, shape (n_frames, frame_length) (librosa's framing)."""
    half = frame_length // 2
    padded = np.pad(y, (half, half), mode=pad_mode)
    return np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]


@lru_cache(maxsize=8)
def _stft_window(n_fft: int) -> np.ndarray:
    return librosa.filters.get_window("hann", n_fft, fftbins=True)  # float64, as librosa.stft uses it


#: Frames per FFT call in :func:`_spectral_pass`: 64 frames of 2048 float64 samples (1 MB) stay
#: in cache; one call over a whole 30-s clip (21 MB) ran 2x slower.
_STFT_BLOCK = 64


@_jit
def _frame_shape(row, freqs, fraction):  # pragma: no cover - compiled
    """(centroid, bandwidth (p=2), rolloff frequency) of one magnitude frame, as librosa's
    spectral_centroid, spectral_bandwidth and spectral_rolloff give them with S=|STFT|.

    The moments are accumulated in float64: bandwidth**2 = E[f**2] - centroid**2 cancels heavily
    for pure tones. The rolloff repeats librosa's float32 running sum bin by bin, so it lands on
    the same bin."""
    n_bins = row.shape[0]
    col, m1, m2 = 0.0, 0.0, 0.0
    total = np.float32(0.0)
    for b in range(n_bins):
        v = row[b]
        total += v                       # float32, in order: librosa's cumsum's last value
        f = freqs[b]
        col += v
        m1 += v * f
        m2 += v * f * f
    safe = 1.0 if col < np.finfo(np.float32).tiny else col  # librosa leaves ~0 frames as they are
    centroid = m1 / safe
    bandwidth = np.sqrt(max((m2 - 2.0 * centroid * m1) / safe + centroid * centroid * (col / safe), 0.0))
    threshold = np.float32(fraction) * total
    running = np.float32(0.0)
    b = 0
    while b < n_bins - 1:                # first bin whose running float32 sum reaches it
        running += row[b]
        if running >= threshold:
            break
        b += 1
    return centroid, bandwidth, freqs[b]


def _zero_crossing_rate(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """librosa.feature.zero_crossing_rate(y) (threshold 1e-10, zero counts as positive), exactly,
    from one crossing indicator summed per hop-sized block instead of per-frame comparisons.

    A frame of ``frame_length`` samples starting at ``s`` counts the crossings at ``s+1 ..
    s+frame_length-1`` (librosa pads the crossing array with False at a frame's first sample):
    the sum of the blocks it covers minus the crossing at ``s``. When ``hop_length`` does not
    divide ``frame_length`` a cumulative sum over samples does the same.

    Returns
    -------
    np.ndarray, shape (n_frames,), float64
    """
    half = frame_length // 2
    padded = np.pad(y, (half, half), mode="edge")
    negative = padded < -1e-10  # |x| <= 1e-10 is zero, and zero counts as positive
    crossing = np.zeros(len(padded), dtype=np.int8)
    np.not_equal(negative[1:], negative[:-1], out=crossing[1:].view(np.bool_))
    n_frames = 1 + (len(padded) - frame_length) // hop_length
    starts = np.arange(n_frames) * hop_length
    if frame_length % hop_length == 0:
        per = frame_length // hop_length
        n_blocks = n_frames + per - 1
        blocks = crossing[: n_blocks * hop_length].reshape(n_blocks, hop_length).sum(axis=1, dtype=np.int64)
        csum = np.concatenate([[0], np.cumsum(blocks)])
        counts = csum[per:per + n_frames] - csum[:n_frames] - crossing[starts]
    else:
        csum = np.concatenate([[0], np.cumsum(crossing, dtype=np.int64)])
        counts = csum[starts + frame_length] - csum[starts + 1]
    return counts / frame_length


@_jit
def _median_columns_kernel(x, size):  # pragma: no cover - compiled
    n_steps, n_lanes = x.shape
    half = size // 2
    out = np.empty_like(x)
    window = np.empty((size, n_lanes), dtype=x.dtype)  # each column sorted: one lane's window
    replaced = np.empty(n_lanes, dtype=np.uint8)

    def source_row(j):  # row of x at position j of the mirror-padded axis ('reflect', repeated)
        i = j - half
        while i < 0 or i >= n_steps:
            i = -i - 1 if i < 0 else 2 * n_steps - i - 1
        return i

    for j in range(size):
        window[j, :] = x[source_row(j)]
    for p in range(size):  # odd-even transposition sort of every lane at once
        for j in range(p % 2, size - 1, 2):
            lo, hi = window[j], window[j + 1]
            for lane in range(n_lanes):
                a, b = lo[lane], hi[lane]
                lo[lane], hi[lane] = min(a, b), max(a, b)
    out[0, :] = window[half]
    for c in range(1, n_steps):
        old, new = x[source_row(c - 1)], x[source_row(c - 1 + size)]
        replaced[:] = 0
        for j in range(size):  # the first copy of the leaving value becomes the entering one
            row = window[j]
            for lane in range(n_lanes):
                v = row[lane]
                hit = (v == old[lane]) & (replaced[lane] == 0)
                row[lane] = new[lane] if hit else v
                replaced[lane] |= hit
        for j in range(size - 1):  # one pass up carries a too-large value to its place ...
            lo, hi = window[j], window[j + 1]
            for lane in range(n_lanes):
                a, b = lo[lane], hi[lane]
                lo[lane], hi[lane] = min(a, b), max(a, b)
        for j in range(size - 2, -1, -1):  # ... and one pass down a too-small one
            lo, hi = window[j], window[j + 1]
            for lane in range(n_lanes):
                a, b = lo[lane], hi[lane]
                lo[lane], hi[lane] = min(a, b), max(a, b)
        out[c, :] = window[half]
    return out


def _median_columns(x: np.ndarray, size: int) -> np.ndarray:
    """Median filter of odd ``size`` down each column of a 2-D array, 'reflect' edges: the same
    numbers as ``scipy.ndimage.median_filter(x, size=(size, 1), mode="reflect")``.

    Every column keeps its window sorted while it slides down; a step swaps the leaving value for
    the entering one and restores the order with one compare-exchange pass up and one down. The
    passes are branch-free and run across all columns at once (SIMD), 1.5-3x faster than scipy's
    1-D filter laid over the rows end to end (its n-D path is ~10x slower still).

    Parameters
    ----------
    x : np.ndarray, shape (n_rows, n_cols), finite
    size : int, odd

    Returns
    -------
    np.ndarray, shape (n_rows, n_cols), same dtype
    """
    if size // 2 == 0:
        return x.copy()
    return _median_columns_kernel(np.ascontiguousarray(x), int(size))


def _pool_rows(x: np.ndarray, pool: int) -> np.ndarray:
    """Sum groups of ``pool`` adjacent rows (a shorter last group is kept, summed), with ``pool``
    strided whole-array additions (a reduction over a length-3 axis costs ~10x more).

    Returns
    -------
    np.ndarray, shape (ceil(n_rows / pool), n_cols)
    """
    if pool <= 1:
        return x
    n_rows = x.shape[0]
    n_full = n_rows // pool
    pooled = x[0:n_full * pool:pool].copy()
    for k in range(1, pool):
        pooled += x[k:n_full * pool:pool]
    if n_full * pool < n_rows:
        pooled = np.concatenate([pooled, x[n_full * pool:].sum(axis=0, keepdims=True)], axis=0)
    return pooled


def _pool_frequency(energy: np.ndarray, bands=HR_FREQ_BANDS) -> np.ndarray:
    """Sum adjacent bins, more of them the higher the band (see :data:`HR_FREQ_BANDS`); a band's
    leftover bins form one shorter group.

    Parameters
    ----------
    energy : np.ndarray, shape (n_frames, n_bins)

    Returns
    -------
    np.ndarray, shape (n_groups, n_frames): bands as rows, ready for the filter along time
    """
    t = np.ascontiguousarray(energy.T)
    n_bins = t.shape[0]
    parts, start = [], 0
    for upper, pool in bands:
        stop = n_bins if upper >= 1 else min(n_bins, int(round(upper * n_bins)))
        seg = t[start:stop]
        if seg.shape[0]:
            parts.append(_pool_rows(seg, pool))
        start = stop
    return np.concatenate(parts, axis=0)


def _harmonic_ratio(pooled: np.ndarray, time_pool: int = HR_TIME_POOL) -> float:
    """Spectral-domain HPSS harmonic energy ratio; see the module docstring.

    Parameters
    ----------
    pooled : np.ndarray, shape (n_pooled_frames, n_bins)
        ``|STFT|**2`` summed over consecutive groups of ``time_pool`` frames (a shorter last
        group kept), as :func:`_spectral_pass` leaves it.
    time_pool : int
        Frames per group; the time kernel shrinks to match (odd).

    Returns
    -------
    float in [0, 1]
    """
    energy = _pool_frequency(pooled)  # (n_groups, n_pooled_frames)
    k_time = max(1, (_HPSS_KERNEL // time_pool) | 1)  # odd, spanning about the reference's 31 frames
    # The median commutes with the monotone sqrt (it picks one element of an odd window), so the
    # squared medians of the magnitude sqrt(E) that librosa's power-2 soft mask needs are the
    # medians of E itself: no square roots, no squaring.
    harm2 = _median_columns(energy.T, k_time).T    # along time, per band
    perc2 = _median_columns(energy, _HPSS_KERNEL)  # along frequency, per pooled frame
    denom = harm2 + perc2
    tiny = np.finfo(np.float32).tiny
    # librosa.util.softmask splits evenly (0.5) where both estimates are ~0
    mask = np.where(denom > tiny, harm2 / np.maximum(denom, tiny), np.float32(0.5))
    total = float(energy.sum(dtype=np.float64))
    return float(np.sum(energy * mask * mask, dtype=np.float64) / total) if total > 0 else 0.0


def _tuning_from_peaks(pitch: np.ndarray, mags: np.ndarray) -> float:
    """estimate_tuning's last step: the peaks at least as strong as their median, histogrammed by
    their deviation from equal temperament (``librosa.pitch_tuning``, resolution 0.01)."""
    positive = pitch > 0
    threshold = np.median(mags[positive]) if positive.any() else 0.0
    selected = pitch[(mags >= threshold) & positive]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty peak set -> librosa warns and returns 0.0
        return float(librosa.pitch_tuning(selected, resolution=0.01, bins_per_octave=12))


#: Onset-envelope frames per forward FFT call in :func:`_tempo` (128 x 720 float32: 370 kB).
_TEMPO_BLOCK = 128


def _tempo(onset_env: np.ndarray, sr: int, hop_length: int) -> float:
    """``librosa.feature.tempo(onset_envelope=onset_env, sr=sr, hop_length=hop_length)``, with
    the tempogram's frames laid out contiguously (librosa autocorrelates along the strided axis
    of a (lag, frame) view) and its forward FFT in float32 (the onset envelope is float32; the
    averaging is float64). Identical BPM to librosa on 150 GTZAN clips and cuts: the choice is an
    argmax over lags whose scores differ far more than float32 rounding.

    Every frame's windowed autocorrelation is max-normalised, averaged over frames, weighted by
    the 120-BPM log-normal prior, and the best lag gives the tempo.
    """
    if not onset_env.any():  # beat_track returns 0 BPM when there are no onsets
        return 0.0
    win_length, window, bpms, logprior = _tempo_constants(sr, hop_length)
    n = onset_env.shape[-1]
    padded = np.pad(onset_env, (win_length // 2, win_length // 2), mode="linear_ramp", end_values=[0, 0])
    n_pad = scipy.fft.next_fast_len(2 * win_length - 1, real=True)
    frames = np.lib.stride_tricks.sliding_window_view(padded, win_length)[:n]
    window32 = window.astype(np.float32)
    # librosa max-normalises each frame's autocorrelation irfft(power) and averages them. The
    # maximum is the lag-0 value, the frame's energy (Cauchy-Schwarz, Parseval), and the inverse
    # FFT is linear: the mean of normalised autocorrelations is the inverse FFT of the
    # energy-weighted mean power spectrum. One inverse FFT instead of one per frame, and the
    # forward FFTs run in blocks of frames that stay in cache (2.3x faster than one big call).
    weighted = np.zeros(n_pad // 2 + 1)
    block = np.zeros((_TEMPO_BLOCK, n_pad), dtype=np.float32)  # windowed frames, zero-padded
    for start in range(0, n, _TEMPO_BLOCK):
        m = min(_TEMPO_BLOCK, n - start)
        np.multiply(frames[start:start + m], window32, out=block[:m, :win_length])
        spectrum = scipy.fft.rfft(block[:m], axis=1)
        power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
        energy = np.einsum("ij,ij->i", block[:m, :win_length], block[:m, :win_length], dtype=np.float64)
        energy[energy < np.finfo(np.float64).tiny] = 1.0  # librosa.util.normalize leaves ~0 frames as-is
        weighted += (1.0 / energy) @ power.astype(np.float64)
    tempogram = scipy.fft.irfft(weighted, n=n_pad)[:win_length] / n
    return float(bpms[np.argmax(np.log1p(1e6 * tempogram) + logprior)])


@_jit
def _frame_pass_kernel(mag, start, spec, mel, mel_first, mel_offsets, mel_weights, freqs, roll_fraction,
                       tune_lo, tune_hi, sr, n_fft, pooled, time_pool, shape_sums, peak_pitch, peak_mag,
                       n_peaks):  # pragma: no cover - compiled
    """Everything per frame, for frames start .. start + len(mag) while they are in cache: see
    `_spectral_pass`. Peak arithmetic repeats `librosa.core.pitch.piptrack`'s numpy dtypes."""
    tiny = np.finfo(np.float32).tiny
    n_bins = mag.shape[1]
    for i in range(mag.shape[0]):
        t = start + i
        row = mag[i]
        peak_power = np.float32(0.0)
        for b in range(n_bins):
            p = row[b] * row[b]
            if p < tiny:  # float32 denormals make later products ~20x slower; all << 1e-30
                p = np.float32(0.0)
            spec[t, b] = p
            if p > peak_power:
                peak_power = p
        for m in range(mel_first.shape[0]):  # 128 triangles, each over its few bins
            acc = np.float32(0.0)
            first = mel_first[m] - mel_offsets[m]
            for k in range(mel_offsets[m], mel_offsets[m + 1]):
                acc += spec[t, first + k] * mel_weights[k]
            mel[t, m] = acc
        centroid, bandwidth, rolloff = _frame_shape(row, freqs, roll_fraction)
        shape_sums[0] += centroid
        shape_sums[1] += bandwidth
        shape_sums[2] += rolloff
        if tune_lo > 0:  # spectral peaks in the tuning band, refined by parabolic interpolation
            ref = np.float32(0.1) * peak_power
            for b in range(tune_lo, tune_hi + 1):
                x0, xm, xp = spec[t, b], spec[t, b - 1], spec[t, b + 1]
                if x0 > ref and x0 > xm and x0 >= xp:
                    a = np.float64(xp + xm) - 2.0 * np.float64(x0)
                    half_diff = np.float64(xp - xm) / 2.0
                    shift = np.float32(0.0 if abs(half_diff) >= abs(a) else -half_diff / a)
                    avg = (xp - xm) / np.float32(2.0)
                    n = n_peaks[0]
                    peak_pitch[n] = np.float32((np.float64(b) + np.float64(shift)) * np.float64(sr) / np.float64(n_fft))
                    peak_mag[n] = x0 + np.float32(0.5) * avg * shift
                    n_peaks[0] = n + 1
        g = t // time_pool  # frames summed in groups of time_pool, in order, for the harmonic ratio
        if t % time_pool == 0:
            for b in range(n_bins):
                pooled[g, b] = spec[t, b]
        else:
            for b in range(n_bins):
                pooled[g, b] += spec[t, b]


#: Share of a frame's magnitude below the rolloff frequency (librosa.feature.spectral_rolloff's default).
_ROLL_PERCENT = 0.85


class _SpectralPass(NamedTuple):
    spec: np.ndarray          #: (n_frames, n_bins) float32 power, denormals flushed to 0
    mel: np.ndarray           #: (n_frames, 128) float32 mel power
    shape: Tuple[float, float, float]  #: mean centroid, bandwidth, rolloff (Hz)
    tuning: float             #: estimated tuning, fractions of a semitone
    pooled: np.ndarray        #: (ceil(n_frames / HR_TIME_POOL), n_bins) float32 time-pooled power


def _spectral_pass(y: np.ndarray, sr: int, n_fft: int, hop_length: int) -> _SpectralPass:
    """The STFT and every per-frame quantity, in one pass over blocks of frames.

    The STFT is librosa's, bit for bit: centred zero-padded frames times the float64 Hann window,
    a float64 FFT rounded to complex64, the magnitude in float32. (A float32 FFT would be faster
    but lifts the floor of a pure tone's spectrum enough to move its bandwidth by 3%.) Each block
    of :data:`_STFT_BLOCK` frames is transformed and, while it is in cache, one compiled loop
    takes its power (kept for chroma), mel power, centroid / bandwidth / rolloff
    (:func:`_frame_shape`), the spectral peaks that ``librosa.estimate_tuning`` histograms, and
    the harmonic ratio's time pooling. With separate numpy passes over a 30-s clip's 5 MB
    spectrogram the whole feature vector took 1.2x longer on one core (62.8 against 75.9 ms, best
    of 5, side by side), and the gap grows with both cores busy (they share the memory bus).

    Peaks: piptrack keeps bins that are local maxima along frequency of ``S * (S > 0.1 * max(S))``
    in 150-4000 Hz and refines them by parabolic interpolation. A bin above the threshold that
    beats its thresholded neighbours also beats their raw values (a neighbour at or below the
    threshold is below the bin), so three comparisons on the raw power find them, and the
    interpolation repeats librosa's numpy dtypes (float64 stencil, float32 results).
    """
    frames = _frames(y, n_fft, hop_length, "constant")  # (n_frames, n_fft) strided view
    n_frames, n_bins = frames.shape[0], 1 + n_fft // 2
    window = _stft_window(n_fft)
    freqs = _fft_freqs(sr, n_fft)
    band = np.flatnonzero((150.0 <= freqs) & (freqs < min(4000.0, sr / 2)))
    tune_lo, tune_hi = (int(band[0]), int(band[-1])) if band.size else (0, 0)
    in_kernel = band.size > 0 and tune_lo > 0 and tune_hi + 1 < n_bins  # else librosa's own (edge bins)
    spec = np.empty((n_frames, n_bins), dtype=np.float32)
    mel_bands = _mel_bands(sr, n_fft)
    mel = np.empty((n_frames, len(mel_bands[0])), dtype=np.float32)
    pooled = np.empty((-(-n_frames // HR_TIME_POOL), n_bins), dtype=np.float32)
    capacity = n_frames * ((tune_hi - tune_lo) // 2 + 1) if in_kernel else 0
    peak_pitch, peak_mag = np.empty(capacity, dtype=np.float32), np.empty(capacity, dtype=np.float32)
    shape_sums, n_peaks = np.zeros(3), np.zeros(1, dtype=np.int64)
    mag = np.empty((_STFT_BLOCK, n_bins), dtype=np.float32)
    for start in range(0, n_frames, _STFT_BLOCK):
        block = frames[start:start + _STFT_BLOCK]
        spectrum = scipy.fft.rfft(block * window, axis=1, overwrite_x=True)
        np.abs(spectrum.astype(np.complex64), out=mag[:len(block)])
        _frame_pass_kernel(mag[:len(block)], start, spec, mel, *mel_bands, freqs, _ROLL_PERCENT,
                           tune_lo if in_kernel else 0, tune_hi, sr, n_fft, pooled, HR_TIME_POOL,
                           shape_sums, peak_pitch, peak_mag, n_peaks)
    if in_kernel:
        tuning = _tuning_from_peaks(peak_pitch[:n_peaks[0]], peak_mag[:n_peaks[0]])
    elif band.size:
        tuning = float(librosa.estimate_tuning(S=spec.T, sr=sr, n_fft=n_fft, bins_per_octave=12))
    else:
        tuning = 0.0
    return _SpectralPass(spec, mel, tuple(float(v) / n_frames for v in shape_sums), tuning, pooled)


def extract_features(y: np.ndarray, sr: int = SAMPLE_RATE, *, n_fft: int = N_FFT,
                     hop_length: int = HOP_LENGTH) -> np.ndarray:
    """The 59-dim feature vector of one mono clip, from a single STFT.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio in [-1, 1] at ``sr``; at least :data:`MIN_SECONDS` long, not silent.
    sr : int
    n_fft, hop_length : int
        STFT size and hop (librosa's defaults; the frame length of ZCR and RMS is ``n_fft``).

    Returns
    -------
    np.ndarray, shape (59,), float32
        In :data:`FEATURE_NAMES` order.

    Raises
    ------
    AudioError
        Invalid, silent or too-short input.
    ImportError
        librosa or scipy is not installed.
    """
    _require_audio_deps("extract_features")
    y = _check_signal(y, sr, "array")

    # One pass over the STFT's frames gives the power spectrogram (frames as rows, C order: the
    # per-frame reductions run along contiguous rows), mel power, spectral shape, tuning and the
    # harmonic ratio's pooled power; see _spectral_pass.
    spectral = _spectral_pass(y, sr, n_fft, hop_length)

    # MFCC: 128-band mel power -> dB -> DCT-II (librosa.feature.mfcc with its defaults)
    mel_db = librosa.power_to_db(spectral.mel)  # (T, 128)
    mfcc = scipy.fft.dct(mel_db, axis=1, type=2, norm="ortho")[:, :N_MFCC]

    # Chroma from the same power spectrogram (librosa.feature.chroma_stft(S=power))
    chroma = spectral.spec @ _chroma_basis(sr, n_fft, spectral.tuning).T  # (T, 12)
    chroma /= np.where(chroma.max(axis=1, keepdims=True) < np.finfo(np.float32).tiny, np.float32(1.0),
                       chroma.max(axis=1, keepdims=True))  # librosa.util.normalize(norm=inf): per frame

    # Centroid / bandwidth (p=2) / rolloff (85%) on the magnitude, as librosa with S=|STFT|.
    centroid, bandwidth, rolloff = spectral.shape

    zcr = _zero_crossing_rate(y, n_fft, hop_length)
    frames = _frames(y, n_fft, hop_length, "constant")
    rms = np.sqrt(np.einsum("ij,ij->i", frames, frames, dtype=np.float32) / np.float32(n_fft))

    # Tempo as librosa.beat.beat_track estimates it: median-aggregated onset strength of the
    # same mel dB spectrogram, then the autocorrelation tempo with the 120-BPM log-normal prior.
    onset_env = librosa.onset.onset_strength(S=mel_db.T, sr=sr, hop_length=hop_length, n_fft=n_fft,
                                             aggregate=np.median)
    tempo = _tempo(onset_env, sr, hop_length)

    out = np.concatenate([
        mfcc.mean(axis=0), mfcc.std(axis=0), chroma.mean(axis=0),
        [centroid, bandwidth, rolloff, zcr.mean(), rms.mean(), tempo, _harmonic_ratio(spectral.pooled)],
    ])
    return out.astype(np.float32)


def reference_features(y: np.ndarray, sr: int = SAMPLE_RATE, *, n_fft: int = N_FFT,
                       hop_length: int = HOP_LENGTH) -> np.ndarray:
    """The same 59 features computed the seed notebook's way: plain per-call librosa.

    Every call recomputes its own STFT (seven of them) and the harmonic ratio comes from a full
    time-domain HPSS (``librosa.effects.hpss``) as ``sum(y_h**2) / sum(y**2)``. This is the
    correctness reference for :func:`extract_features` and the baseline in the benchmarks; it is
    slow (seconds per 30-s clip).

    Parameters and return value as in :func:`extract_features`.
    """
    _require_audio_deps("reference_features")
    y = _check_signal(y, sr, "array")
    kw = dict(n_fft=n_fft, hop_length=hop_length)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC, **kw)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, **kw)
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr, **kw)
    bandwidth = librosa.feature.spectral_bandwidth(y=y, sr=sr, **kw)
    rolloff = librosa.feature.spectral_rolloff(y=y, sr=sr, **kw)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop_length)
    rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop_length)
    tempo, _ = librosa.beat.beat_track(y=y, sr=sr, hop_length=hop_length)
    y_harm, _ = librosa.effects.hpss(y, **kw)
    y64 = y.astype(np.float64)
    harmonic_ratio = np.sum(y_harm.astype(np.float64) ** 2) / np.sum(y64**2)
    out = np.concatenate([
        mfcc.mean(axis=1), mfcc.std(axis=1), chroma.mean(axis=1),
        [centroid.mean(), bandwidth.mean(), rolloff.mean(), zcr.mean(), rms.mean(),
         float(np.atleast_1d(tempo)[0]), harmonic_ratio],
    ])
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Whole songs: clip-length windows
# --------------------------------------------------------------------------------------------


def split_windows(y: np.ndarray, sr: int = SAMPLE_RATE, clip_seconds: float = CLIP_SECONDS) -> List[np.ndarray]:
    """Cut a song into consecutive, non-overlapping clip-length windows (views, no copies).

    Tail rule: audio left after the last full window becomes one more window *aligned to the
    end of the song* (overlapping its neighbour) when it is at least half a window long, and is
    dropped otherwise. A song shorter than one window is repeated to fill exactly one window
    (tempo, chroma and the front end then see a full window; under :data:`MIN_RECORDING_SECONDS` is an
    error).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
    sr : int
    clip_seconds : float
        Window length in seconds (> 0).

    Returns
    -------
    list of np.ndarray
        Each of shape (round(clip_seconds * sr),).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise AudioError(f"array: expected mono audio of shape (n_samples,), got shape {y.shape}")
    if not clip_seconds > 0:
        raise ValueError(f"clip_seconds must be > 0, got {clip_seconds!r}")
    if y.size < int(np.ceil(MIN_RECORDING_SECONDS * sr)):  # checked before repetition can hide it
        raise AudioError(f"array: recording too short: {y.size} samples ({y.size / sr:.3f} s) at {sr} Hz, "
                         f"need at least {MIN_RECORDING_SECONDS} s")
    win = int(round(clip_seconds * sr))
    if len(y) < win:  # repeat a short recording to fill one window, as musicnn's training did
        return [np.resize(y, win)]
    if len(y) == win:
        return [y]
    n_full = len(y) // win
    windows = [y[i * win:(i + 1) * win] for i in range(n_full)]
    if len(y) - n_full * win >= win / 2:
        windows.append(y[len(y) - win:])
    return windows


class SongWindows(NamedTuple):
    """The kept (non-silent) windows of a song: what every model input is computed from."""

    features: np.ndarray  #: (n_windows, 59) float32
    starts: np.ndarray  #: (n_windows,) int64, first sample of each window
    audio: List[np.ndarray]  #: n_windows arrays of round(clip_seconds * sr) samples (views of the song)


def extract_song(y: np.ndarray, sr: int = SAMPLE_RATE, clip_seconds: float = CLIP_SECONDS, *,
                 n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> SongWindows:
    """Features of every clip-length window of a song (see :func:`split_windows`), with the windows.

    Windows are processed one at a time, so memory beyond the song itself is one window's
    spectrogram. Silent windows (e.g. a quiet intro) are skipped; a song that is silent
    throughout raises :class:`AudioError`. The kept windows' audio comes back too, for a
    pretrained front end that embeds the same windows (``frontend.window_embeddings``).

    Returns
    -------
    SongWindows
        ``features`` (n_windows, 59) float32, ``starts`` (n_windows,) int64, ``audio`` (the windows).
    """
    y = np.asarray(y)
    windows = split_windows(y, sr, clip_seconds)
    win = int(round(clip_seconds * sr))
    starts_all = [i * win for i in range(len(windows))]
    if len(windows) > max(len(y) // win, 1):  # the kept tail window is aligned to the song's end
        starts_all[-1] = len(y) - win
    rows, starts, kept, silent = [], [], [], 0
    for w, s in zip(windows, starts_all):
        try:
            rows.append(extract_features(w, sr, n_fft=n_fft, hop_length=hop_length))
            starts.append(s)
            kept.append(w)
        except AudioError as exc:
            if "silent" not in str(exc) or len(windows) == 1:
                raise
            silent += 1
    if not rows:
        raise AudioError(f"array: all {silent} windows are silent")
    return SongWindows(np.stack(rows).astype(np.float32), np.asarray(starts, dtype=np.int64), kept)


def extract_windows(y: np.ndarray, sr: int = SAMPLE_RATE, clip_seconds: float = CLIP_SECONDS, *,
                    n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                    return_starts: bool = False):
    """Features of every clip-length window of a song: :func:`extract_song` without the audio.

    Returns
    -------
    features : np.ndarray, shape (n_windows, 59), float32
    starts : np.ndarray, shape (n_windows,), int64
        Only with ``return_starts=True``: the first sample of each returned window.
    """
    song = extract_song(y, sr, clip_seconds, n_fft=n_fft, hop_length=hop_length)
    return (song.features, song.starts) if return_starts else song.features
