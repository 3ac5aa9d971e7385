"""One song's way to its verdict, written once.

    audio (path, bytes or waveform) --song_waveform--> mono float32 at the model's rate
        --song_inputs--> the kept windows' model inputs (59 features [+ front-end embedding]), starts, duration
        --model.window_outputs--> per-window probabilities, gate weights, few-shot vectors
        --song_verdict--> the song's verdict: genre, confidence, probabilities, gate weights,
                          added genres, front-end tags, known / novelty, and every window clipped to the song

Every door calls these: `MusicGenreMoE.predict_audio`, the pipeline, `classify.py` (local pool and
Ray workers, through `workbench.batch`), the demo and the notebook. A test sends one song through
each door and checks that they agree.
"""

from typing import NamedTuple, Optional

import numpy as np

try:
    from .features import (CLIP_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE, AudioError, as_mono_waveform, extract_song,
                           load_audio, resample_audio)
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from features import (CLIP_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE, AudioError, as_mono_waveform, extract_song,
                          load_audio, resample_audio)


class SongInputs(NamedTuple):
    """The model inputs of a song's kept (non-silent) windows."""

    features: np.ndarray  #: (n_windows, input_size) float32: raw inputs, the model z-scores them
    starts: np.ndarray    #: (n_windows,) int64: each window's first sample at the song's rate
    duration: float       #: seconds of the decoded song


def song_waveform(audio, sampling_rate=None, sr=SAMPLE_RATE):
    """A file path (or file bytes) or a waveform -> mono float32 at `sr`.

    Parameters
    ----------
    audio : str, os.PathLike, bytes or array
        A file, the file's bytes, or a waveform (float in [-1, 1] or integer PCM, mono or
        multichannel, see `features.as_mono_waveform`).
    sampling_rate : int
        The waveform's rate; required for arrays, ignored for files (they carry theirs).
    sr : int
        The rate to return.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32

    Samples outside [-1, 1]: both doors give the same answer. A file's decoder clips finite samples
    to [-1, 1] (`decoding.decode_audio`), and a waveform is clipped the same way after resampling,
    so a float WAV scaled by 1e30 and the same samples as an array are both clipped and classified
    alike; NaN or infinite samples are refused by both ("audio contains NaN or infinite samples").
    The caller's array is never changed (an out-of-range one is clipped into a copy).
    """
    if isinstance(audio, (bytes, bytearray)):
        return _load_bytes(bytes(audio), sr)
    if isinstance(audio, str) or hasattr(audio, "__fspath__"):
        return load_audio(audio, sr=sr)
    if isinstance(audio, (list, tuple)) and audio and (isinstance(audio[0], str) or hasattr(audio[0], "__fspath__")):
        raise TypeError(f"audio: expected one song (a path, bytes or a waveform), got a {type(audio).__name__} of "
                        f"{len(audio)} paths; call once per song, or use classify.py for many")
    if sampling_rate is None:
        raise ValueError("audio: a waveform needs its sampling_rate (e.g. 22050), got None")
    rate = _check_rate(sampling_rate)
    return _clipped(resample_audio(as_mono_waveform(audio), rate, sr))


def _clipped(y, source="array", block=1 << 20):
    """A waveform's samples in [-1, 1], as the file decoder leaves them: non-finite ones refused,
    the rest clipped (into a copy, only when a sample lies outside); checked a block at a time."""
    peak = 0.0
    for i in range(0, len(y), block):
        part = y[i:i + block]
        if not np.isfinite(part).all():
            raise AudioError(f"{source}: audio contains NaN or infinite samples")
        if part.size:
            peak = max(peak, float(np.abs(part).max()))
    return np.clip(y, -1.0, 1.0).astype(np.float32, copy=False) if peak > 1.0 else y


def _check_rate(sampling_rate):
    """A sample rate as a positive int; NaN, infinities, fractions and non-numbers are refused."""
    try:
        value = float(sampling_rate)
    except (TypeError, ValueError):
        raise ValueError(f"sampling_rate: expected a positive integer rate in Hz, got {sampling_rate!r}") from None
    if not np.isfinite(value) or value <= 0 or value != int(value):
        raise ValueError(f"sampling_rate: expected a positive integer rate in Hz, got {sampling_rate!r}")
    return int(value)


def _load_bytes(data, sr):
    """Decode an audio file held in memory through a temporary file (the decoders read paths)."""
    import os
    import tempfile

    fd, path = tempfile.mkstemp(prefix="genre-audio-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_audio(path, sr=sr)
    finally:
        os.unlink(path)


def song_inputs(y, sr=SAMPLE_RATE, clip_seconds=CLIP_SECONDS, frontend=None, *, n_fft=N_FFT, hop_length=HOP_LENGTH,
                source="array", frontend_precision="auto"):
    """The model inputs of every kept window of a song.

    The song is cut into `clip_seconds` windows (`features.extract_song`: silent windows are
    skipped, a short song is one repeated window, the last window is aligned to the song's end);
    each window gets its 59 features and, with a front end, the front end's embedding of the same
    window (`song_patches`, then `frontend.patch_embeddings`), appended: the front end's windows are
    cut from the song resampled to 16 kHz once, and only kept windows reach the network.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at `sr`.
    sr : int
    clip_seconds : float
        The model's `config.clip_seconds`.
    frontend : frontend.MusiCNN or None
        The model's front end (`model.frontend`), or None for a model on the 59 features alone.
    n_fft, hop_length : int
    source : str
        How errors name the song: its file's path, or "array".
    frontend_precision : str
        The front end's arithmetic (`frontend.resolve_precision`: "auto", "fp32", "bf16", "int8");
        the model's `config.frontend_precision` at inference, "fp32" for training inputs.

    Returns
    -------
    SongInputs
        features (n_windows, 59 [+ front-end width]) float32, starts (n_windows,) int64, duration (s).
    """
    try:
        song = extract_song(y, sr=sr, clip_seconds=clip_seconds, n_fft=n_fft, hop_length=hop_length)
    except AudioError as exc:  # the windowing only knows an "array": name the song's file
        if source != "array" and str(exc).startswith("array: "):
            raise AudioError(f"{source}: {str(exc)[len('array: '):]}") from None
        raise
    feats = song.features
    if frontend is not None:
        try:
            from .frontend import patch_embeddings
        except ImportError:
            from frontend import patch_embeddings
        emb = patch_embeddings(frontend, song_patches(y, sr, song.starts, clip_seconds), precision=frontend_precision)
        feats = np.concatenate([feats, emb], axis=1).astype(np.float32)
    return SongInputs(feats, song.starts, len(y) / float(sr))


def song_patches(y, sr, starts, clip_seconds=CLIP_SECONDS):
    """The musicnn log-mel patches of a song's windows, cut from the song resampled to 16 kHz once
    (resampling each window would redo the work per window; `frontend.song_windows_16k`).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        The whole song, mono, at `sr`.
    sr : int
    starts : np.ndarray, shape (n_windows,)
        The kept windows' first samples at `sr` (`SongInputs.starts`).
    clip_seconds : float
        The windows' length (`config.clip_seconds`).

    Returns
    -------
    list of np.ndarray
        One (n_patches, 187, 96) float32 array per window (`frontend.window_patches`).
    """
    try:
        from .frontend import MUSICNN_SAMPLE_RATE, song_windows_16k, window_patches
    except ImportError:
        from frontend import MUSICNN_SAMPLE_RATE, song_windows_16k, window_patches
    windows = song_windows_16k(y, sr, starts, int(round(clip_seconds * sr)))
    return [window_patches(w, MUSICNN_SAMPLE_RATE) for w in windows]


def song_verdict(model, inputs: SongInputs, outputs=None, top_k: Optional[int] = None):
    """The verdict on one song from its window inputs (and, when already computed, its window outputs).

    Parameters
    ----------
    model : MusicGenreMoE
    inputs : SongInputs
        `song_inputs` of the song, at `model.config.sampling_rate`.
    outputs : WindowOutputs, optional
        `model.window_outputs(inputs.features)`, when the caller ran many songs' windows together
        (classify.py); computed here otherwise.
    top_k : int, optional
        How many genres `top` lists (default: every genre).

    Returns
    -------
    dict
        The `predict` dict of the whole song (window probabilities and gate weights averaged:
        `predicted_genre`, `confidence`, `probabilities`, `gate_weights`, `prototype_scores` with
        added genres, `tags` and `known`/`novelty` when the model has them), plus `top` ([genre,
        probability] pairs, best first), `duration_s`, `num_windows` and `windows` (one dict per
        window: `start`/`end` seconds, clipped to the song, and that window's prediction).
    """
    outputs = model.window_outputs(inputs.features) if outputs is None else outputs
    song = model.genre_results(outputs.mean())[0]
    genres = model.config.genres
    probs = [song["probabilities"][g] for g in genres]
    order = sorted(range(len(genres)), key=lambda i: -probs[i])[:top_k or len(genres)]
    song["top"] = [[genres[i], probs[i]] for i in order]
    sr, win = model.config.sampling_rate, model.config.clip_seconds
    song["duration_s"] = round(inputs.duration, 3)
    song["num_windows"] = len(inputs.features)
    song["windows"] = [
        {"start": round(int(s0) / sr, 3), "end": round(min(int(s0) / sr + win, inputs.duration), 3), **r}
        for s0, r in zip(inputs.starts, model.genre_results(outputs, windows=True))
    ]
    return song


__all__ = ["SongInputs", "song_waveform", "song_inputs", "song_patches", "song_verdict"]
