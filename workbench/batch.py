"""Many recordings at once: worker processes and an on-disk cache for :mod:`features`.

Training (`train.py --data-dir`), the benchmarks and `classify.py` use this module; the Hub export
does not ship it (a Hub user predicts one song at a time with `features.py` alone).

API (stable)
------------
``extract_many(sources, *, sr, clip_seconds, n_jobs, cache_dir, progress, n_fft, hop_length,
frontend) -> ExtractionResult(features, starts, ok, failures, cache_hits)``
    Every source at once, results in input order.
``iter_extract(sources, *, sr, clip_seconds, n_jobs, cache_dir, n_fft, hop_length, frontend,
return_starts=False) -> iterator of (index, features_or_None, error_or_None)``
    The streaming form, in completion order: ``sources`` may be any iterable (a generator over a
    library of thousands of files); at most ``2 * n_jobs`` sources are in flight, so memory stays
    bounded by the workers and a few results whatever the library's size. With
    ``return_starts=True`` each item is ``(index, features, error, starts)``. Stopping the
    iteration early shuts the workers down. :func:`extract_many` is built on it.

Each source is processed whole inside one worker: the regular-file check, the content hash, the
cache lookup, decoding, features (and front-end embeddings) and the cache write. The parent only
hands out sources and collects results, so hashing and cache reads run in parallel too.

Cache
-----
One ``.npz`` per (content, settings): ``features`` and ``starts``. The key hashes the content under
a domain tag (``person=b"mgm-file"`` for a file's bytes, ``b"mgm-array"`` for an array's dtype,
shape and bytes: a file whose bytes mimic an array's key material cannot reach its entry) and the
settings from :func:`cache_settings` (feature version, sr, clip length, STFT, librosa version, the
front end's weights). Entries are written atomically (temporary file + rename); an entry that
cannot be read back (0 bytes, truncated, another format, wrong shape, non-finite) is recomputed and
rewritten, never raised.

Workers
-------
``n_jobs`` workers are this process plus ``n_jobs - 1`` child processes: the parent computes
sources too while it dispatches (one fork fewer, and no idle core while it waits), which is what
makes the pool pay off on batches of a few files. Children are forked on Linux after a warm-up in
the parent (imports, filter banks, JIT), with one BLAS thread each (the parent too, for the batch).
They die with their parent: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux, plus a watchdog thread
that exits when the parent process is gone (other platforms, and the window before prctl). The
death signal follows the *thread* that started the pool, so iterate :func:`iter_extract` from the
thread that started it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import stat
import sys
import threading
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from frontend import EMBEDDING_SIZE
from song import SongInputs, song_inputs, song_patches
from workbench.atomic_files import replacing
from features import (HOP_LENGTH, HR_FREQ_BANDS, HR_TIME_POOL, FEATURE_VERSION, MIN_SECONDS, N_FEATURES, N_FFT,
                      SAMPLE_RATE, AudioError, PathLike, _require_audio_deps, extract_features,
                      librosa, load_audio)

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["ExtractionResult", "extract_many", "iter_extract", "embed_pending", "Pending", "cache_settings",
           "default_cache_dir", "frontend_key", "resolve_frontend"]

logger = logging.getLogger(__name__)


Source = Union[str, os.PathLike, np.ndarray]

#: Bump when the cache's key derivation or entry layout changes.
CACHE_FORMAT = "3"  # 2: domain-separated content hashes, .npz with features and starts; 3: + duration
#: Tasks in flight per worker: enough to keep every worker busy while results travel back.
_IN_FLIGHT_PER_WORKER = 2
#: Songs per task when the workers run the front end: their patches share the network's passes
#: (frontend.patches_per_pass: 32 in int8; a 30-s song at 6-s windows has 10 patches). int8
#: measured 12.4 ms per patch in passes of 2 (one song's windows two by two) and 10.8 in passes of 20.
SONGS_PER_TASK_WITH_FRONTEND = 3
#: Seconds between the worker watchdog's checks that its parent is alive.
_PARENT_POLL_SECONDS = 1.0


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
    durations : list of float
        Per source, the decoded song's length in seconds, aligned with ``features``.
    ok : list of int
        Indices into the input ``sources`` that succeeded, ascending.
    failures : list of (str, str)
        (source description, error message) for every skipped source.
    cache_hits : int
        How many successful sources came from the cache.
    """

    features: List[np.ndarray] = field(default_factory=list)
    starts: List[np.ndarray] = field(default_factory=list)
    durations: List[float] = field(default_factory=list)
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


def cache_settings(sr: int, clip_seconds: Optional[float], n_fft: int, hop_length: int,
                   frontend_key: Optional[str] = None) -> str:
    """Everything besides the audio that changes a result, as the canonical JSON string hashed
    into every cache key. The one place to add a setting (a new front end, a model input)."""
    return json.dumps({
        "cache_format": CACHE_FORMAT, "feature_version": FEATURE_VERSION, "sr": int(sr),
        "clip_seconds": None if clip_seconds is None else float(clip_seconds),
        "n_fft": int(n_fft), "hop_length": int(hop_length), "hr_time_pool": HR_TIME_POOL,
        "hr_freq_bands": [list(band) for band in HR_FREQ_BANDS],
        "librosa": getattr(librosa, "__version__", None), "frontend": frontend_key,
    }, sort_keys=True)


_settings_key = cache_settings  # the name other modules may still use


def frontend_key(net) -> str:
    """A digest of a front end's weights and of how it embeds a window (`frontend.EMBEDDING_VERSION`):
    embeddings cached with other weights, or cut another way, are never reused."""
    from frontend import EMBEDDING_VERSION

    h = hashlib.blake2b(digest_size=16)
    h.update(f"embedding_version={EMBEDDING_VERSION}".encode())
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


# --------------------------------------------------------------------------------------------
# Sources and the cache
# --------------------------------------------------------------------------------------------

_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _not_regular(path: str, mode: int) -> AudioError:
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return AudioError(f"{path}: not a regular file ({kind})")


def _open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refusing anything but a regular file *before* reading.

    ``stat`` first (a FIFO is never opened: opening one for reading blocks until a writer comes),
    then ``O_NONBLOCK`` open and ``fstat`` of the opened descriptor, so a path swapped in between
    is caught too. /dev/zero, FIFOs, sockets and directories raise :class:`AudioError`.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, st.st_mode)
    return fd


def _content_hash(source: Source) -> str:
    """blake2b of a file's bytes (streamed) or of an array's dtype, shape and bytes, each under
    its own personalisation tag: the two key spaces cannot meet, whatever bytes a file holds."""
    if isinstance(source, np.ndarray):
        arr = np.ascontiguousarray(source)
        h = hashlib.blake2b(digest_size=20, person=b"mgm-array")
        h.update(f"{arr.dtype.str}:{arr.shape}:".encode())
        h.update(memoryview(arr).cast("B"))
        return h.hexdigest()
    h = hashlib.blake2b(digest_size=20, person=b"mgm-file")
    fd = _open_regular(str(source))
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise AudioError(f"{source}: cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    return h.hexdigest()


content_hash = _content_hash  # public: workbench.data finds the same recording under two names by it


def _cache_path(cache_dir: Path, content: str, settings: str) -> Path:
    key = hashlib.blake2b((content + "\0" + settings).encode(), digest_size=20).hexdigest()
    return cache_dir / key[:2] / f"{key}.npz"


def _cache_load(path: Path, width: int) -> Optional[SongInputs]:
    """The SongInputs of a cache entry, or None for a missing entry or any entry that is
    unreadable or malformed (0 bytes, truncated, another format, wrong shape or dtype, non-finite):
    the caller recomputes and rewrites it."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            arr, starts, duration = entry["features"], entry["starts"], float(entry["duration"])
    except FileNotFoundError:
        return None
    except Exception as exc:  # EOFError, zipfile.BadZipFile, KeyError, ValueError, OSError, ...
        logger.info("feature cache entry %s unreadable (%s: %s): recomputing", path, type(exc).__name__, exc)
        return None
    if (arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0 or arr.dtype.kind != "f"
            or not np.isfinite(arr).all() or starts.shape != (len(arr),) or starts.dtype.kind not in "iu"
            or not (np.isfinite(duration) and duration > 0)):
        logger.info("feature cache entry %s malformed: recomputing", path)
        return None
    return SongInputs(arr.astype(np.float32, copy=False), starts.astype(np.int64, copy=False), duration)


def _cache_store(path: Path, song: SongInputs) -> None:
    """Atomic write (`atomic_files.replacing`): concurrent runs never read a half-written entry,
    and a bad entry is replaced in one step. A read-only or full cache does not fail the extraction."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, features=song.features, starts=song.starts, duration=np.float64(song.duration))
    except OSError as exc:
        logger.warning("feature cache write failed for %s: %s", path, exc)


# --------------------------------------------------------------------------------------------
# One source (in a worker, or in this process with n_jobs=1)
# --------------------------------------------------------------------------------------------

#: Per-process state of the extraction, set in the parent before the pool forks (workers inherit
#: it) or by the pool initializer under spawn; never pickled per task. "frontend": the front-end
#: network or None; "job": (settings, cache root, width) of the running extraction. A new
#: per-worker object (a model, a second front end) goes here, loaded lazily on first use.
_WORKER_STATE: Dict[str, object] = {"frontend": None, "job": None, "precision": "fp32", "defer": False}


class Pending(NamedTuple):
    """The front end's share of a song, left to the process that runs the network on its device
    (``iter_extract(frontend_device=...)``); :func:`embed_pending` completes it."""

    source: str                    #: the source's description, for errors
    patches: List[np.ndarray]      #: per kept window, its (n_patches, 187, 96) log-mel patches
    cache_path: Optional[Path]     #: where the completed song is cached, or None (cache off)


def _extract_source(source: Source, sr: int, clip_seconds: Optional[float], n_fft: int,
                    hop_length: int) -> Tuple[SongInputs, Optional[List[np.ndarray]]]:
    """(SongInputs, patches) of one file or array: one row for a whole clip (``clip_seconds``
    None), else the song path's windows (`song.song_inputs`, the front end included). With the
    front end deferred (``_WORKER_STATE["defer"]``), the rows hold the 59 features alone and the
    windows' patches come back for the caller's device (`song.song_patches`); else patches is None."""
    if isinstance(source, np.ndarray):
        y, name = source, "array"
    else:
        y, name = load_audio(source, sr), str(source)
    defer = bool(_WORKER_STATE["defer"])
    net = None if defer else _WORKER_STATE["frontend"]
    try:
        if clip_seconds is not None:
            inputs = song_inputs(y, sr, clip_seconds, net, n_fft=n_fft, hop_length=hop_length,
                                 frontend_precision=_WORKER_STATE["precision"])
            return inputs, (song_patches(y, sr, inputs.starts, clip_seconds) if defer else None)
        feats = extract_features(y, sr, n_fft=n_fft, hop_length=hop_length)[None, :].astype(np.float32)
        whole = SongInputs(feats, np.zeros(1, np.int64), len(y) / float(sr))
        if net is None and not defer:
            return whole, None
        from frontend import patch_embeddings, window_patches

        patches = [window_patches(y, sr)]  # the whole clip is its one window
        if defer:
            return whole, patches
        emb = patch_embeddings(net, patches, precision=_WORKER_STATE["precision"])
        return SongInputs(np.concatenate([feats, emb], axis=1).astype(np.float32), whole.starts, whole.duration), None
    except AudioError as exc:
        msg = str(exc)
        raise AudioError(name + msg[len("array"):] if msg.startswith("array") else msg) from None


def _process(task: Tuple[int, Source, str], args: tuple):
    """Everything for one source: regular-file check, hash, cache lookup, extraction, cache write.

    Returns ``(index, song, error, cache_hit, pending)``: ``pending`` is a :class:`Pending` when
    the front end is deferred and the song was not cached (``song`` then holds the 59 features
    alone), else None. Never raises for a bad source (the error is the one-line message), so a
    worker survives any input.
    """
    index, source, desc = task
    settings, cache_root, width = _WORKER_STATE["job"]
    try:
        path = None
        if cache_root is not None:
            path = _cache_path(cache_root, _content_hash(source), settings)
            cached = _cache_load(path, width)
            if cached is not None:
                return index, cached, None, True, None
        elif not isinstance(source, np.ndarray):
            os.close(_open_regular(str(source)))  # same refusal of FIFOs and devices without the cache
        song, patches = _extract_source(source, *args)
        if patches is not None:  # cached by embed_pending, once complete
            return index, song, None, False, Pending(desc, patches, path)
        if path is not None:
            _cache_store(path, song)
        return index, song, None, False, None
    except AudioError as exc:
        return index, None, str(exc), False, None
    except MemoryError:
        return index, None, f"{desc}: out of memory", False, None
    except Exception as exc:  # one bad source must not stop the batch
        return index, None, f"{desc}: {type(exc).__name__}: {exc}", False, None


def _process_group(tasks: Sequence[Tuple[int, Source, str]], args: tuple) -> list:
    """:func:`_process` for a few sources; with the front end in this worker, their windows'
    patches go through it together (:func:`embed_pending`), each song then cached as alone."""
    net = _WORKER_STATE["frontend"]
    if net is None or _WORKER_STATE["defer"] or len(tasks) == 1:
        return [_process(task, args) for task in tasks]
    _WORKER_STATE["defer"] = True
    try:
        results = [_process(task, args) for task in tasks]
    finally:
        _WORKER_STATE["defer"] = False
    done = embed_pending([Extracted(r[0], r[1], r[2], r[4]) for r in results], net, _WORKER_STATE["precision"])
    return [(d.index, d.song, d.error, r[3], None) for d, r in zip(done, results)]


def _grouped(tasks: Iterator, size: int) -> Iterator[list]:
    """Consecutive tasks in lists of ``size`` (the last may be shorter), pulled lazily."""
    while True:
        group = [task for _, task in zip(range(size), tasks)]
        if not group:
            return
        yield group


def _watch_parent(parent_pid: int) -> None:
    """Worker watchdog: exit as soon as the parent process is gone (reparented worker)."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        threading.Event().wait(_PARENT_POLL_SECONDS)


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when its parent dies, even by SIGKILL (no cleanup runs there)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except Exception:  # no prctl (unusual libc): the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _worker_init(parent_pid: int, state: Optional[dict] = None) -> None:
    """Pool initializer: die with the parent; one BLAS (and torch) thread per worker (the pool
    already uses every core); under spawn, the parent's state (fork inherits it, BLAS limit
    included: see :func:`_one_blas_thread`)."""
    _die_with_parent(parent_pid)
    if state is not None:  # spawn: a fresh interpreter, nothing inherited
        _WORKER_STATE.update(state)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except Exception:  # threadpoolctl is optional; oversubscription only costs some speed
            pass
    if _WORKER_STATE["frontend"] is not None:
        import torch

        torch.set_num_threads(1)


_THREADPOOLS: Dict[str, object] = {}


@contextmanager
def _one_blas_thread():
    """Limit BLAS/OpenMP to one thread in this process while the pool forks its workers, which
    inherit the limit; the parent's own setting comes back afterwards. Scanning the loaded
    libraries costs ~0.1 s, so it is done once per process (not once per worker and batch)."""
    try:
        from threadpoolctl import ThreadpoolController

        if "controller" not in _THREADPOOLS:
            _THREADPOOLS["controller"] = ThreadpoolController()
        limiter = _THREADPOOLS["controller"].limit(limits=1)
    except Exception:  # threadpoolctl is optional; oversubscription only costs some speed
        limiter = None
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


@contextmanager
def _one_torch_thread(net):
    """One torch thread in this process while it computes its share of a batch with a front end:
    it is one of the pool's workers, and the others already use every other core (two torch
    threads here beside a busy worker oversubscribe the cores). The setting comes back afterwards."""
    if net is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_WARM: Dict[tuple, bool] = {}


def _warm_up(sr: int, n_fft: int, hop_length: int) -> None:
    """Run the extractor once on a tiny clip so lazy imports, filter banks and any numba JIT are
    done in the parent before worker processes fork (they inherit the warm state). Once per
    process and settings: a second batch starts its workers without it."""
    if _WARM.get((sr, n_fft, hop_length)):
        return
    t = np.arange(int(max(MIN_SECONDS, 1.0) * sr) + n_fft, dtype=np.float32) / sr
    extract_features((0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sr, n_fft=n_fft,
                     hop_length=hop_length)
    _WARM[(sr, n_fft, hop_length)] = True


def _pool_context():
    """'fork' where it is available and safe (Linux): workers start in milliseconds with librosa
    already imported and warmed. Elsewhere the platform default (spawn)."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class Extracted(NamedTuple):
    """One source's outcome from :func:`iter_extract`."""

    index: int                    #: the source's position in ``sources``
    song: Optional[SongInputs]    #: its window rows, starts and duration; None on failure
    error: Optional[str]          #: None, or a one-line message naming the source and the problem
    pending: Optional[Pending] = None  #: the front end's share, with ``frontend_device`` (see embed_pending)


def iter_extract(sources: Iterable[Source], *, sr: int = SAMPLE_RATE, clip_seconds: Optional[float] = None,
                 n_jobs: Optional[int] = None, cache_dir: Union[None, bool, PathLike] = None,
                 n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, frontend=None,
                 frontend_precision: str = "fp32", frontend_device: Optional[str] = None) -> Iterator[Extracted]:
    """Features of many files or clips, streamed in completion order, one :class:`Extracted` each.

    Parameters are those of :func:`extract_many` (no progress bar here: the caller counts), and:

    frontend_device : str, optional
        Where the caller runs the front end (e.g. ``"cuda"``), batched across songs: the workers
        then decode, compute the 59 features and cut the log-mel patches, and each uncached song
        comes back with its :class:`Pending` share for :func:`embed_pending`. Default None: the
        workers run the front end on the CPU and every song comes back complete.

    ``sources`` may be any iterable, consumed lazily: at most ``2 * n_jobs`` sources are read
    ahead, so a generator over a million files runs in bounded memory.
    """
    for index, song, error, _hit, pending in _iter_results(
            sources, sr=sr, clip_seconds=clip_seconds, n_jobs=n_jobs, cache_dir=cache_dir, n_fft=n_fft,
            hop_length=hop_length, frontend=frontend, frontend_precision=frontend_precision,
            frontend_device=frontend_device):
        yield Extracted(index, song, error, pending)


def embed_pending(items: Sequence[Extracted], frontend, frontend_precision: str = "auto") -> List[Extracted]:
    """Complete songs whose front end was deferred (:func:`iter_extract` with ``frontend_device``):
    every song's patches go through the network together, ``patches_per_pass`` at a time on its
    device, and each completed song is cached where its :class:`Pending` says.

    Parameters
    ----------
    items : sequence of Extracted
        From ``iter_extract(..., frontend_device=...)``; complete ones and failures pass through.
    frontend : MusiCNN
        The front end, on its device (the one given to iter_extract as ``frontend_device``).
    frontend_precision : str
        As given to iter_extract.

    Returns
    -------
    list of Extracted
        The same items in the same order, each pending song's rows now 59 + 200 wide.
    """
    from frontend import patch_embeddings

    out = list(items)
    todo = [i for i, item in enumerate(items) if item.pending is not None]
    try:
        groups = [todo] if todo else []
        embedded = [patch_embeddings(frontend, [p for i in todo for p in items[i].pending.patches],
                                     precision=frontend_precision)] if todo else []
    except Exception as exc:  # e.g. out of GPU memory: song by song, so one song cannot fail the others
        logger.warning("front end failed on %d songs together (%s: %s): retrying one at a time",
                       len(todo), type(exc).__name__, exc)
        groups, embedded = [], []
        for i in todo:
            try:
                embedded.append(patch_embeddings(frontend, items[i].pending.patches, precision=frontend_precision))
                groups.append([i])
            except Exception as one:
                out[i] = Extracted(items[i].index, None, f"{items[i].pending.source}: front end failed "
                                                         f"({type(one).__name__}: {one})")
    for group, emb in zip(groups, embedded):
        row = 0
        for i in group:
            song = items[i].song
            n = len(song.features)
            done = SongInputs(np.concatenate([song.features, emb[row:row + n]], axis=1).astype(np.float32),
                              song.starts, song.duration)
            row += n
            if items[i].pending.cache_path is not None:
                _cache_store(items[i].pending.cache_path, done)
            out[i] = Extracted(items[i].index, done, None)
    return out


def _iter_results(sources: Iterable[Source], *, sr, clip_seconds, n_jobs, cache_dir, n_fft, hop_length,
                  frontend, frontend_precision="fp32", frontend_device: Optional[str] = None,
                  n_sources: Optional[int] = None):
    """iter_extract's engine: yields (index, SongInputs or None, error or None, cache_hit, Pending or None)."""
    _require_audio_deps("extract_many")
    net = resolve_frontend(frontend)
    width = N_FEATURES + (0 if net is None else EMBEDDING_SIZE)
    defer = net is not None and frontend_device is not None
    if defer and clip_seconds is None:
        raise ValueError("frontend_device: the front end runs apart from the workers only on windows "
                         "(clip_seconds), got clip_seconds=None")
    # The precision joins the key: embeddings of another arithmetic are never reused; nor those of
    # another kind of device (a GPU's fp32 convolutions differ from the CPU's in the last bits).
    if frontend_device is not None:
        import torch

        device_type = torch.device(frontend_device).type
    else:
        device_type = None
    settings = cache_settings(sr, clip_seconds, n_fft, hop_length,
                              None if net is None else f"{frontend_key(net)}:{frontend_precision}"
                              + ("" if device_type in (None, "cpu") else f":{device_type}"))
    if cache_dir is False:
        cache_root = None
    else:
        cache_root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir).expanduser()
    args = (sr, clip_seconds, n_fft, hop_length)
    if n_sources is None and hasattr(sources, "__len__"):
        n_sources = len(sources)
    workers = int(n_jobs) if n_jobs else _available_cores()
    if n_sources is not None:
        workers = min(workers, n_sources)
    workers = max(1, workers)
    per_task = SONGS_PER_TASK_WITH_FRONTEND if net is not None and not defer else 1
    tasks = _grouped(((i, src, _describe(src, i)) for i, src in enumerate(sources)), per_task)

    saved = dict(_WORKER_STATE)
    _WORKER_STATE.update(frontend=None if defer else net, job=(settings, cache_root, width),
                         precision=frontend_precision, defer=defer)  # forked workers inherit it
    try:
        if workers == 1:
            # One BLAS thread here too: the products are small, and idle OpenBLAS threads spinning
            # on a busy machine cost ~25% (measured on 2 shared cores).
            with _one_blas_thread():
                for group in tasks:
                    yield from _process_group(group, args)
            return
        _warm_up(sr, n_fft, hop_length)
        ctx = _pool_context()
        state = None if ctx.get_start_method() == "fork" else {key: _WORKER_STATE[key] for key in
                                                               ("frontend", "job", "precision", "defer")}
        # This process is one of the ``workers``: it computes sources itself while the others run
        # in ``workers - 1`` child processes. One fork fewer per batch (forking a process that
        # holds librosa costs 10-200 ms, more on a busy machine), and the parent's core is not
        # idle while it waits, which is what makes the pool pay off on batches of a few files.
        # One BLAS thread in this process too while the batch runs; the workers inherit it.
        with _one_blas_thread(), _one_torch_thread(None if defer else net):
            yield from _run_pool(tasks, args, workers, ctx, state)
    finally:
        _WORKER_STATE.clear()
        _WORKER_STATE.update(saved)


def _new_pool(workers: int, ctx, state: Optional[dict]) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(os.getpid(), state))


def _run_pool(tasks: Iterator[list], args: tuple, workers: int, ctx, state: Optional[dict]) -> Iterator[tuple]:
    """:func:`_process_group` over ``tasks`` in ``workers - 1`` child processes and this one.

    A worker that dies (a decoder crashing on a file, the kernel's out-of-memory killer) breaks
    the pool and every task in flight in it: those tasks' songs are run again one by one, each
    in a process of its own (:func:`_isolated`), so the song that kills its worker gets an error
    line and the others their rows; then a fresh pool takes the rest of the batch.
    """
    pool = _new_pool(workers - 1, ctx, state)
    try:
        pending = set()
        limit = _IN_FLIGHT_PER_WORKER * (workers - 1)
        exhausted = False
        while True:
            broken = []  # groups of tasks lost with a dead worker
            while not exhausted and len(pending) < limit:
                group = next(tasks, None)
                if group is None:
                    exhausted = True
                    break
                try:
                    fut = pool.submit(_process_group, group, args)
                except BrokenProcessPool:
                    broken.append(group)
                    break
                fut.group = group
                pending.add(fut)
            if not exhausted and not broken:  # the workers have their share queued: take one here
                group = next(tasks, None)
                if group is None:
                    exhausted = True
                else:
                    yield from _process_group(group, args)
            if not pending and not broken:
                if exhausted:
                    break
                continue
            done = set()
            if pending:  # (wait on no futures and no timeout would never return)
                done, pending = wait(pending, timeout=None if exhausted else 0, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    broken.append(fut.group)
                    continue
                except Exception as exc:  # e.g. a result that could not be sent back
                    results = [(index, None, f"{desc}: worker failed ({type(exc).__name__}: {exc})", False, None)
                               for index, _source, desc in fut.group]
                yield from results
            if broken:  # the pool is unusable: whatever it still held is lost with it
                finished, pending = wait(pending).done, set()
                for fut in finished:
                    if fut.exception() is None:
                        yield from fut.result()
                    else:
                        broken.append(fut.group)
                pool.shutdown(wait=True, cancel_futures=True)
                lost = [task for group in broken for task in group]
                logger.warning("a worker process died: %d songs it may have held are run again one by one", len(lost))
                for task in lost:
                    yield from _isolated(task, args, ctx, state)
                pool = _new_pool(workers - 1, ctx, state)
    finally:  # also on an early stop of the iteration (generator closed)
        # Queued sources are cancelled and the workers joined here. Not wait=False: an
        # executor left to reap its workers in the background races the interpreter's exit
        # (its wake-up pipe and call queue are closed under the manager thread), which
        # printed "OSError: [Errno 9] Bad file descriptor" at the end of some runs (issue 23).
        pool.shutdown(wait=True, cancel_futures=True)


def _isolated(task: Tuple[int, Source, str], args: tuple, ctx, state: Optional[dict]) -> list:
    """One song in a process of its own: its results, or its error if that process dies too."""
    with _new_pool(1, ctx, state) as alone:
        try:
            return alone.submit(_process_group, [task], args).result()
        except Exception as exc:  # BrokenProcessPool: this song kills the process that reads it
            index, _source, desc = task
            return [(index, None, f"{desc}: the worker process reading it died (it crashed, or was killed, e.g. "
                                  f"for memory: {type(exc).__name__})", False, None)]


def extract_many(sources: Iterable[Source], *, sr: int = SAMPLE_RATE, clip_seconds: Optional[float] = None,
                 n_jobs: Optional[int] = None, cache_dir: Union[None, bool, PathLike] = None,
                 progress: Optional[bool] = None, n_fft: int = N_FFT,
                 hop_length: int = HOP_LENGTH, frontend=None, frontend_precision: str = "fp32") -> ExtractionResult:
    """Features of many files or clips, in worker processes, with an on-disk cache.

    Parameters
    ----------
    sources : sequence of str, os.PathLike or np.ndarray
        Audio files (any format :func:`load_audio` reads) or 1-D float arrays already at ``sr``.
    sr : int
    clip_seconds : float or None
        None: one feature row per source (the whole clip). A number: every source is cut into
        windows of that length (:func:`features.extract_song`).
    n_jobs : int or None
        Workers: this process and ``n_jobs - 1`` child processes; None uses every available
        core, 1 runs in this process only.
    cache_dir : None, False or path
        None: :func:`default_cache_dir`; False: no cache. Entries are keyed by the file's bytes
        (or the array's bytes) plus :func:`cache_settings` (``sr``, ``clip_seconds``, ``n_fft``,
        ``hop_length``, :data:`FEATURE_VERSION`, the librosa version and the front end's
        weights), so changed settings never hit stale entries.
    progress : bool or None
        Show a tqdm bar; None shows one when 20 or more sources are given.
    n_fft, hop_length : int
    frontend : None, "none", "musicnn" or a ``frontend.MusiCNN``
        With a front end each window's row also holds its 200-d embedding (the window features,
        then the embedding: a model's ``input_size`` row), computed in the workers with one torch
        thread each (see :func:`resolve_frontend`; pass ``model.frontend`` to use a trained model's).
    frontend_precision : str
        The front end's arithmetic (`frontend.resolve_precision`): "fp32" (default: training inputs
        must not depend on the CPU) or the model's ``config.frontend_precision`` when tagging.

    Returns
    -------
    ExtractionResult
        A source that fails (missing, undecodable, not audio, not a regular file, silent, ...) is
        logged, listed in ``failures`` with a one-line message and skipped; the rest of the batch
        completes.
    """
    sources = list(sources)
    show = (len(sources) >= 20) if progress is None else bool(progress)
    bar = tqdm(total=len(sources), desc="features", unit="file", disable=not show) if (tqdm and sources) else None
    results: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
    failures: Dict[int, str] = {}
    hits = 0
    try:
        for index, song, error, hit, _pending in _iter_results(
                sources, sr=sr, clip_seconds=clip_seconds, n_jobs=n_jobs, cache_dir=cache_dir, n_fft=n_fft,
                hop_length=hop_length, frontend=frontend, frontend_precision=frontend_precision):
            if error is None:
                results[index] = song
                hits += bool(hit)
            else:
                failures[index] = error
                logger.warning("skipped %s", error)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    out = ExtractionResult(cache_hits=hits)
    for i in range(len(sources)):
        if i in results:
            out.ok.append(i)
            out.features.append(results[i].features)
            out.starts.append(results[i].starts)
            out.durations.append(results[i].duration)
        elif i in failures:
            out.failures.append((_describe(sources[i], i), failures[i]))
    return out
