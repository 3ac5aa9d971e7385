"""Many recordings at once: worker processes and an on-disk cache for :mod:`features`.

Training (`train.py --data-dir`), the benchmarks and `classify.py` use this module; the Hub export
does not ship it (a Hub user predicts one song at a time with `features.py` alone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from frontend import EMBEDDING_SIZE
from features import (HOP_LENGTH, HR_TIME_POOL, FEATURE_VERSION, MIN_SECONDS, N_FEATURES, N_FFT, SAMPLE_RATE,
                      AudioError, PathLike, _require_audio_deps, extract_features, extract_song, librosa,
                      load_audio)

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["ExtractionResult", "extract_many", "default_cache_dir", "frontend_key", "resolve_frontend"]

logger = logging.getLogger(__name__)


Source = Union[str, os.PathLike, np.ndarray]


@dataclass
class ExtractionResult:
    """Outcome of :func:`extract_many`.

    Attributes
    ----------
    features : list of np.ndarray
        One (n_windows, width) float32 array per successful source (one row when
        ``clip_seconds`` is None), aligned with ``ok``. width is 59, or 59 + 200 with the musicnn
        front end (the window features, then the window's front-end embedding).
    starts : list of np.ndarray
        Per source, the first sample (at ``sr``) of each kept window, aligned with ``features``:
        silent windows are skipped, so a row's index alone does not give its time.
    ok : list of int
        Indices into the input ``sources`` that succeeded, ascending.
    failures : list of (str, str)
        (source description, error message) for every skipped source.
    cache_hits : int
        How many successful sources came from the cache.
    """

    features: List[np.ndarray] = field(default_factory=list)
    starts: List[np.ndarray] = field(default_factory=list)
    ok: List[int] = field(default_factory=list)
    failures: List[Tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0


def default_cache_dir() -> Path:
    """``$MUSIC_GENRE_MOE_CACHE`` if set, else ``$XDG_CACHE_HOME/music-genre-moe/features``
    (``~/.cache/music-genre-moe/features``)."""
    env = os.environ.get("MUSIC_GENRE_MOE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "music-genre-moe" / "features"


def _describe(source: Source, index: int) -> str:
    if isinstance(source, np.ndarray):
        return f"array[{index}]"
    return str(source)


def _settings_key(sr: int, clip_seconds: Optional[float], n_fft: int, hop_length: int,
                  frontend_key: Optional[str] = None) -> str:
    """Everything besides the audio that changes the result (part of every cache key)."""
    return json.dumps({
        "feature_version": FEATURE_VERSION, "sr": int(sr), "clip_seconds": clip_seconds,
        "n_fft": int(n_fft), "hop_length": int(hop_length), "hr_time_pool": HR_TIME_POOL,
        "librosa": getattr(librosa, "__version__", None), "frontend": frontend_key,
    }, sort_keys=True)


def frontend_key(net) -> str:
    """A digest of a front end's weights: embeddings cached with other weights are never reused."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{type(net).__name__}:{h.hexdigest()}"


def resolve_frontend(frontend):
    """None, "none", "musicnn" (the converted weights shipped beside frontend.py) or a MusiCNN module."""
    if frontend is None or frontend == "none":
        return None
    if frontend == "musicnn":
        from frontend import load_musicnn

        return load_musicnn()
    if hasattr(frontend, "embed"):
        return frontend.eval()
    raise ValueError(f"frontend: expected None, 'none', 'musicnn' or a MusiCNN module, got {frontend!r}")


def _content_hash(source: Source) -> str:
    """blake2b of the file's bytes (streamed) or of the array's dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=20)
    if isinstance(source, np.ndarray):
        arr = np.ascontiguousarray(source)
        h.update(f"array:{arr.dtype.str}:{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    else:
        with open(source, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _cache_path(cache_dir: Path, content: str, settings: str) -> Path:
    key = hashlib.blake2b((content + settings).encode(), digest_size=20).hexdigest()
    return cache_dir / key[:2] / f"{key}.npz"


def _cache_load(path: Path, width: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(features, starts) of a cache entry, or None for any entry that is unreadable or malformed
    (0 bytes, truncated, another format): the caller recomputes and rewrites it."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            arr, starts = entry["features"], entry["starts"]
    except Exception:  # EOFError, zipfile.BadZipFile, KeyError, ValueError, OSError, ...
        return None
    if arr.ndim != 2 or arr.shape[1] != width or not np.isfinite(arr).all() or starts.shape != (len(arr),):
        return None
    return arr.astype(np.float32, copy=False), starts.astype(np.int64, copy=False)


def _cache_store(path: Path, arr: np.ndarray, starts: np.ndarray) -> None:
    """Atomic write (temp file + rename): concurrent runs never read a half-written entry."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, features=arr, starts=starts)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full cache must not fail the extraction
        logger.warning("feature cache write failed for %s: %s", path, exc)


#: Per-process state of the extraction: the front end network, set in the parent before the pool
#: forks (workers inherit it) or by the pool initializer under spawn; never pickled per task.
_WORKER_STATE: Dict[str, object] = {"frontend": None}


def _extract_source(source: Source, sr: int, clip_seconds: Optional[float], n_fft: int,
                    hop_length: int) -> Tuple[np.ndarray, np.ndarray]:
    """(features, starts) of one file or array: (1, width) for a whole clip or (n_windows, width)."""
    if isinstance(source, np.ndarray):
        y, name = source, "array"
    else:
        y, name = load_audio(source, sr), str(source)
    try:
        if clip_seconds is None:
            feats = extract_features(y, sr, n_fft=n_fft, hop_length=hop_length)[None, :]
            starts, windows = np.zeros(1, np.int64), [y]
        else:
            feats, starts, windows = extract_song(y, sr, clip_seconds, n_fft=n_fft, hop_length=hop_length)
        net = _WORKER_STATE["frontend"]
        if net is not None:
            from frontend import window_embeddings

            feats = np.concatenate([feats, window_embeddings(net, windows, sr)], axis=1)
        return feats, starts
    except AudioError as exc:
        msg = str(exc)
        raise AudioError(name + msg[len("array"):] if msg.startswith("array") else msg) from None


def _worker_init(frontend=None) -> None:
    """Pool initializer: one BLAS (and torch) thread per worker (the pool already uses every core)."""
    if frontend is not None:  # spawn: the parent's state is not inherited
        _WORKER_STATE["frontend"] = frontend
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl is optional; oversubscription only costs some speed
        pass
    if _WORKER_STATE["frontend"] is not None:
        import torch

        torch.set_num_threads(1)


def _warm_up(sr: int, n_fft: int, hop_length: int) -> None:
    """Run the extractor once on a tiny clip so lazy imports, filter banks and any numba JIT are
    done in the parent before worker processes fork (they inherit the warm state)."""
    t = np.arange(int(MIN_SECONDS * sr) + n_fft, dtype=np.float32) / sr
    extract_features((0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sr, n_fft=n_fft,
                     hop_length=hop_length)


def _pool_context():
    """'fork' where it is available and safe (Linux): workers start in milliseconds with librosa
    already imported and warmed. Elsewhere the platform default (spawn)."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def extract_many(sources: Sequence[Source], *, sr: int = SAMPLE_RATE, clip_seconds: Optional[float] = None,
                 n_jobs: Optional[int] = None, cache_dir: Union[None, bool, PathLike] = None,
                 progress: Optional[bool] = None, n_fft: int = N_FFT,
                 hop_length: int = HOP_LENGTH, frontend=None) -> ExtractionResult:
    """Features of many files or clips, in worker processes, with an on-disk cache.

    Parameters
    ----------
    sources : sequence of str, os.PathLike or np.ndarray
        Audio files (any format :func:`load_audio` reads) or 1-D float arrays already at ``sr``.
    sr : int
    clip_seconds : float or None
        None: one feature row per source (the whole clip). A number: every source is cut into
        windows of that length (:func:`extract_windows`).
    n_jobs : int or None
        Worker processes; None uses every available core, 1 runs in this process.
    cache_dir : None, False or path
        None: :func:`default_cache_dir`; False: no cache. Entries are keyed by the file's bytes
        (or the array's bytes) plus ``sr``, ``clip_seconds``, ``n_fft``, ``hop_length``,
        :data:`FEATURE_VERSION`, the librosa version and the front end's weights, so changed
        settings never hit stale entries.
    progress : bool or None
        Show a tqdm bar; None shows one when 20 or more sources need computing.
    n_fft, hop_length : int
    frontend : None, "none", "musicnn" or a ``frontend.MusiCNN``
        With a front end each window's row also holds its 200-d embedding (the window features,
        then the embedding: a model's ``input_size`` row), computed in the workers with one torch
        thread each (see :func:`resolve_frontend`; pass ``model.frontend`` to use a trained model's).

    Returns
    -------
    ExtractionResult
        A source that fails (missing, undecodable, silent, ...) is logged, listed in
        ``failures`` and skipped; the rest of the batch completes.
    """
    _require_audio_deps("extract_many")
    sources = list(sources)
    net = resolve_frontend(frontend)
    width = N_FEATURES + (0 if net is None else EMBEDDING_SIZE)
    settings = _settings_key(sr, clip_seconds, n_fft, hop_length, None if net is None else frontend_key(net))
    if cache_dir is False:
        cache_root = None
    else:
        cache_root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir).expanduser()

    results: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
    failures: Dict[int, str] = {}
    cache_paths: Dict[int, Path] = {}
    todo: List[int] = []
    hits = 0
    for i, src in enumerate(sources):
        if cache_root is not None:
            try:
                cache_paths[i] = _cache_path(cache_root, _content_hash(src), settings)
            except OSError as exc:
                problem = "file not found" if not Path(src).exists() else f"cannot read file ({exc.strerror or exc})"
                failures[i] = f"{_describe(src, i)}: {problem}"
                logger.warning("skipped %s", failures[i])
                continue
            cached = _cache_load(cache_paths[i], width) if cache_paths[i].exists() else None
            if cached is not None:
                results[i] = cached
                hits += 1
                continue
        todo.append(i)

    def finish(i: int, result: Tuple[np.ndarray, np.ndarray]) -> None:
        results[i] = result
        if i in cache_paths:
            _cache_store(cache_paths[i], *result)

    def fail(i: int, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, AudioError) else f"{_describe(sources[i], i)}: {type(exc).__name__}: {exc}"
        failures[i] = msg
        logger.warning("skipped %s", msg)

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(int(n_jobs) if n_jobs else available, len(todo)))
    show = (len(todo) >= 20) if progress is None else bool(progress)
    bar = tqdm(total=len(todo), desc="features", unit="file", disable=not show) if (tqdm and todo) else None
    args = (sr, clip_seconds, n_fft, hop_length)
    _WORKER_STATE["frontend"] = net  # this process, and the forked workers, inherit it
    if todo and workers == 1:
        for i in todo:
            try:
                finish(i, _extract_source(sources[i], *args))
            except Exception as exc:  # one bad source must not stop the batch
                fail(i, exc)
            if bar is not None:
                bar.update(1)
    elif todo:
        _warm_up(sr, n_fft, hop_length)
        # Each task carries one path (or one array); a worker holds one file's audio at a time.
        ctx = _pool_context()
        init_args = (net,) if ctx.get_start_method() != "fork" else ()
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=init_args) as pool:
            futures = {pool.submit(_extract_source, sources[i], *args): i for i in todo}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    finish(i, fut.result())
                except Exception as exc:  # includes a crashed worker (BrokenProcessPool)
                    fail(i, exc)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()

    out = ExtractionResult(cache_hits=hits)
    for i in range(len(sources)):
        if i in results:
            out.ok.append(i)
            out.features.append(results[i][0])
            out.starts.append(results[i][1])
        elif i in failures:
            out.failures.append((_describe(sources[i], i), failures[i]))
    return out
