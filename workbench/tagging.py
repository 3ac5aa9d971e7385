"""Tagging a library: song batches through the one song path, the output files, and resume.

classify.py is the command. The same functions run in the local worker pool (`run_local`) and
in Ray workers (`classify_paths`), which is why a local and a Ray run write the same rows.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from decoding import AUDIO_EXTENSIONS
from song import SongInputs, song_verdict
from workbench.atomic_files import write_bytes


class UsageError(Exception):
    """A bad argument or unusable input: reported as one line, exit code 2."""


# ------------------------------------------------------------------------------------------------
# Inputs


def find_audio(inputs: Sequence[str]) -> Tuple[List[str], int]:
    """Expand files, folders (recursive) and globs into absolute, de-duplicated file paths.

    Returns (paths in a stable order, number of non-audio files skipped inside folders). Paths are
    absolute so that a resumed run from another working directory, and every Ray node, name each
    song the same way.
    """
    found: List[str] = []
    seen = set()
    ignored = 0

    def add(p: str) -> None:
        ap = os.path.abspath(p)
        if ap not in seen:
            seen.add(ap)
            found.append(ap)

    def add_folder(d: str) -> None:
        nonlocal ignored
        for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):  # macOS "._x.mp3" resource forks, editor swap files
                    continue
                if name.lower().endswith(AUDIO_EXTENSIONS):
                    add(os.path.join(dirpath, name))
                else:
                    ignored += 1

    for raw in inputs:
        p = os.path.expanduser(raw)
        if os.path.isdir(p):
            add_folder(p)
        elif os.path.isfile(p):
            add(p)
        elif glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise UsageError(f"PATH {raw}: the pattern matches no file or folder")
            for m in matches:
                add_folder(m) if os.path.isdir(m) else add(m)
        elif os.path.exists(p):
            raise UsageError(f"PATH {raw}: not a regular file or folder")
        else:
            raise UsageError(f"PATH {raw}: no such file or folder")
    return found, ignored



# ------------------------------------------------------------------------------------------------
# Songs -> predictions (shared by the local pool and the Ray workers)


class RayJobError(RuntimeError):
    """A Ray job that cannot run or finish (no cluster, a worker's import error): one line, exit 1."""


def model_genres(model) -> List[str]:
    c = model.config
    return [c.id2label[i] for i in range(c.num_labels)]


@dataclass
class Settings:
    """Everything a worker needs besides the model; plain values so that Ray can ship it."""

    sr: int
    clip_seconds: float
    top_k: int = 3
    batch_windows: int = 4096      # windows per forward pass
    want_windows: bool = False     # per-window results (for --jsonl / --timeline-dir)
    cache_dir: object = False      # the batch cache: False (off), None (default) or a folder
    frontend_precision: str = "auto"  # the model's config.frontend_precision (frontend.resolve_precision)
    device: str = "cpu"            # where the model runs; elsewhere than the CPU, the front end runs there
                                   # on many songs' patches at once, and the workers only cut them


@dataclass
class Song:
    """A song's path and its model inputs (`song.SongInputs`, from the batch workers)."""

    path: str
    inputs: SongInputs


def _r(v: float) -> float:
    return round(float(v), 6)


def _rounded(d: dict) -> dict:
    return {k: _r(v) for k, v in d.items()}


def predict_songs(model, songs: Sequence[Song], settings: Settings) -> List[dict]:
    """One record per song: `song.song_verdict`, the verdict `model.predict_audio` gives, rounded
    for the output files; every song's windows go through the model in one batch."""
    if not songs:
        return []
    outputs = model.window_outputs(np.concatenate([s.inputs.features for s in songs]), settings.batch_windows)
    records, offset = [], 0
    for song in songs:
        n = len(song.inputs.features)
        verdict = song_verdict(model, song.inputs, outputs.rows(slice(offset, offset + n)), top_k=settings.top_k)
        offset += n
        rec = {
            "path": song.path,
            "genre": verdict["predicted_genre"],
            "confidence": _r(verdict["confidence"]),
            "top": [[g, _r(p)] for g, p in verdict["top"]],
            "duration_s": verdict["duration_s"],
            "num_windows": n,
            "probabilities": _rounded(verdict["probabilities"]),
            "gate_weights": _rounded(verdict["gate_weights"]),
        }
        for key in ("prototype_scores", "tags"):
            if key in verdict:
                rec[key] = _rounded(verdict[key])
        if "novelty" in verdict:
            rec["known"], rec["novelty"] = verdict["known"], _r(verdict["novelty"])
        if settings.want_windows:
            rec["windows"] = [{"start": w["start"], "end": w["end"], "genre": w["predicted_genre"],
                               "confidence": _r(w["confidence"]), "probabilities": _rounded(w["probabilities"]),
                               "gate_weights": _rounded(w["gate_weights"])} for w in verdict["windows"]]
        records.append(rec)
    return records


def _reason(path: str, message: str) -> str:
    """The failure message without its leading "<path>: " (the path has its own column)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def model_frontend(model):
    """The model's pretrained front end (musicnn), or None: extract_many then computes each
    window's embedding in the workers, beside its 59 features, with the model's own weights."""
    if getattr(model.config, "frontend", "none") in (None, "none"):
        return None
    return getattr(model, "frontend", None)


def extract_chunk(paths: Sequence[str], settings: Settings, n_jobs: Optional[int], frontend=None):
    """(songs, failures) for some paths, through `workbench.batch.iter_extract` (input order)."""
    from workbench.batch import iter_extract

    songs, failures = [], []
    for item in sorted(iter_extract(list(paths), sr=settings.sr, clip_seconds=settings.clip_seconds, n_jobs=n_jobs,
                                    cache_dir=settings.cache_dir, frontend=frontend,
                                    frontend_precision=settings.frontend_precision), key=lambda e: e.index):
        path = str(paths[item.index])
        if item.error is None:
            songs.append(Song(path, item.song))
        else:
            failures.append((path, _reason(path, item.error)))
    return songs, failures


def classify_paths(model, paths: Sequence[str], settings: Settings, n_jobs: Optional[int] = 1):
    """(records, failures) for some paths: features, then one batched prediction. A Ray worker
    calls this on its chunk; the local run streams the same features (`run_local`) into the same
    `predict_songs`, which is why local and Ray runs give the same rows."""
    songs, failures = extract_chunk(paths, settings, n_jobs, model_frontend(model))
    return predict_songs(model, songs, settings), failures

# ------------------------------------------------------------------------------------------------
# Output: append-only, fsynced, resumable


def _whole_lines_length(path: Path) -> int:
    """The length of `path` up to its last newline: a last line without one is a torn write."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return size
        pos = size  # scan back for the last newline, in blocks (the file may be large)
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            nl = fh.read(step).rfind(b"\n")
            if nl >= 0:
                return pos + nl + 1
    return 0


def _cut(path: Path, keep: int) -> None:
    with open(path, "rb+") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def _first_line(path: Path, limit: int = 1 << 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.readline(limit)


def _quoted(raw: bytes, n: int = 60) -> str:
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    return repr(text[:n] + ("..." if len(text) > n else ""))


@contextlib.contextmanager
def signals_deferred(signals=(signal.SIGINT, signal.SIGTERM)):
    """Hold SIGINT/SIGTERM back while a block runs (main thread only): a signal that arrives is
    recorded and raised again after the block, never between a write reaching the disk and the
    count that records it. (A thread's signal mask would not do: the kernel hands a process's
    signal to any thread that does not block it, and Python raises it in the main thread.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    old = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in pending:
            signal.raise_signal(sig)


class OutputError(Exception):
    """An output file could not be written (a full disk, an I/O error): one line, exit code 1."""


def _append_bytes(fh, data: bytes) -> None:
    """Write all of `data` to an unbuffered file and fsync it (a raw write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view):]
    os.fsync(fh.fileno())


def append_whole(fh, path: Path, data: bytes) -> None:
    """Append `data` (whole lines) to `fh`, or nothing: on a failed write (ENOSPC, EIO) what was
    written of it is cut off again, so no torn line is left, and an OutputError names the file."""
    start = os.fstat(fh.fileno()).st_size
    try:
        _append_bytes(fh, data)
    except OSError as exc:
        try:
            os.ftruncate(fh.fileno(), start)
        except OSError:  # the next run drops a torn last line anyway
            pass
        raise OutputError(f"{path}: {exc.strerror or exc} (errno {exc.errno}) while appending "
                          f"{len(data)} bytes; nothing of it was kept") from None


def _csv_line(values: Sequence) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class AppendLog:
    """A CSV file that only ever grows by whole lines, each batch flushed and fsynced."""

    def __init__(self, path: Path, header: List[str]):
        self.path, self.header = path, header
        self.fh = None

    def open(self, overwrite: bool) -> List[List[str]]:
        """Open for appending; returns the rows already there. An existing file must be this tool's
        (its header, then rows of as many fields), checked before a byte of it changes; only then
        is a torn last line (a write interrupted mid-line) dropped."""
        rows: List[List[str]] = []
        if self.path.exists() and not overwrite and self.path.stat().st_size:
            keep = _whole_lines_length(self.path)
            self._check_header(_first_line(self.path))
            with open(self.path, "rb") as fh:
                data = fh.read(keep)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = data.count(b"\n", 0, exc.start) + 1
                raise UsageError(f"{self.path}: line {line} is not UTF-8 text; the file was edited or corrupted: "
                                 f"fix it or use --overwrite") from None
            reader = csv.reader(io.StringIO(text, newline=""))
            next(reader, None)
            for row in reader:
                if len(row) != len(self.header):
                    raise UsageError(f"{self.path}: line {reader.line_num} has {len(row)} fields, expected "
                                     f"{len(self.header)}; the file was edited or corrupted: fix it or use --overwrite")
                rows.append(row)
            if keep < self.path.stat().st_size:
                dropped = self.path.stat().st_size - keep
                _cut(self.path, keep)
                print(f"{self.path}: dropped an incomplete last line ({dropped} bytes) left by an interrupted run",
                      file=sys.stderr)
        if overwrite or not self.path.exists() or self.path.stat().st_size == 0:
            write_bytes(self.path, _csv_line(self.header).encode("utf-8"))
        self.fh = open(self.path, "ab", buffering=0)
        return rows

    def _check_header(self, first: bytes) -> None:
        """Refuse a file that is not this tool's output (another CSV, a text file, a WAV)."""
        try:
            head = next(csv.reader([first.decode("utf-8")]), [])
        except UnicodeDecodeError:
            head = None
        if head == self.header:
            return
        if head is None or head[:1] != self.header[:1] or len(head) < 2 or head[1] != self.header[1]:
            raise UsageError(f"{self.path}: exists and is not a classify.py output (first line {_quoted(first)}, "
                             f"expected the header {','.join(self.header[:3])},...); name another file "
                             f"(--overwrite would replace it)")
        raise UsageError(f"{self.path}: existing file has other columns ({','.join(head[:6])}...): it was written "
                         f"with another model or --top-k; use another output or --overwrite")

    def append(self, rows: Iterable[Sequence]) -> None:
        data = "".join(_csv_line(r) for r in rows).encode("utf-8")
        if data:
            append_whole(self.fh, self.path, data)  # one batch of whole lines, or nothing

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class OutputLock:
    """One run at a time per output file: `<file>.lock` beside it, held with an exclusive
    `fcntl.flock` and naming its holder (pid, host, start time). A second run is refused with a
    line naming the holder. The kernel drops the lock of a process that dies (even by SIGKILL), so
    a lock file left by a dead run is stale and simply taken over."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no lock
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0)
                os.close(fd)
                raise UsageError(self._busy(holder)) from None
            try:  # the file we locked must still be the one at the path (a holder unlinks it on release)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self.fd = fd

    def _busy(self, raw: bytes) -> str:
        try:
            h = json.loads(raw)
            holder = f"classify.py pid {h['pid']} on {h['host']} since {h['started']}"
        except (ValueError, KeyError, TypeError):
            holder = "another classify.py run"
        return f"{self.path}: this output is in use by {holder}; wait for that run to finish"

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


TAGS_IN_CSV = 5  # the front end's most likely tags per song in the CSV (the JSONL holds ten)


def csv_header(genres: Sequence[str], top_k: int) -> List[str]:
    cols = ["path", "genre", "confidence"]
    for k in range(1, top_k + 1):
        cols += [f"top{k}", f"top{k}_prob"]
    # known/novelty: "none of these" (empty for a model without genre centroids); tags: the front
    # end's MSD tags, "tag:probability" best first (empty without a front end).
    return cols + ["duration_s", "num_windows", "known", "novelty", "tags"] + [f"gate_{g}" for g in genres]


def csv_row(rec: dict, genres: Sequence[str]) -> List[str]:
    row = [rec["path"], rec["genre"], f"{rec['confidence']:.6f}"]
    for g, p in rec["top"]:
        row += [g, f"{p:.6f}"]
    row += ["" if rec["duration_s"] is None else f"{rec['duration_s']:.3f}", str(rec["num_windows"])]
    row += ["" if "known" not in rec else str(rec["known"]).lower(),
            "" if "novelty" not in rec else f"{rec['novelty']:.6f}",
            ";".join(f"{tag}:{p:.3f}" for tag, p in list(rec.get("tags", {}).items())[:TAGS_IN_CSV])]
    return row + [f"{rec['gate_weights'][g]:.6f}" for g in genres]


class Outputs:
    """The run's files: predictions CSV, errors CSV, optional JSONL timelines and PNGs.

    Write order per batch: JSONL and PNGs first, then the CSV rows (the record of what is done),
    so a crash in between only means those songs are redone on resume."""

    def __init__(self, out: Path, errors: Path, jsonl: Optional[Path], timeline_dir: Optional[Path],
                 genres: List[str], top_k: int, tags=None):
        self.genres = genres
        self.tags = tags  # workbench.tags.LibraryTags (--compare-tags, --write-tags) or None
        self.rows = AppendLog(out, csv_header(genres, top_k) + (tags.columns if tags else []))
        self.errors = AppendLog(errors, ["path", "reason"])
        self.jsonl_path, self.timeline_dir = jsonl, timeline_dir
        self.jsonl = None
        self.done_rows: List[List[str]] = []
        self.done_errors: List[List[str]] = []
        self.written = 0
        self.failed = 0
        self.locks: List[OutputLock] = []

    def open(self, overwrite: bool, retry_errors: bool) -> set:
        """Lock and open everything; returns the paths to skip (already classified, or failed before).
        The locks come first: nothing is read or repaired while another run writes."""
        try:
            for p in (self.rows.path, self.errors.path, self.jsonl_path):
                if p is not None:
                    self.locks.append(OutputLock(p))
                    self.locks[-1].acquire()
            return self._open(overwrite, retry_errors)
        except BaseException:
            self.close()
            raise

    def _open(self, overwrite: bool, retry_errors: bool) -> set:
        self.done_rows = self.rows.open(overwrite)
        done = {r[0] for r in self.done_rows}
        prior_errors = self.errors.path.exists() and not overwrite
        self.done_errors = self.errors.open(overwrite)
        if retry_errors and prior_errors and self.done_errors:
            # Forget the old failures (they are tried again and re-recorded if they fail again).
            self.errors.close()
            self.done_errors = []
            self.errors.open(overwrite=True)
        skip = done | {r[0] for r in self.done_errors}
        if self.jsonl_path is not None:
            self._open_jsonl(done, overwrite)
        if self.timeline_dir is not None:
            self.timeline_dir.mkdir(parents=True, exist_ok=True)
        return skip

    def _open_jsonl(self, done: set, overwrite: bool) -> None:
        """Keep the JSONL lines of songs in the CSV (once each); drop the rest (a torn line, or songs
        written there but not yet in the CSV when the run stopped: they are redone)."""
        p = self.jsonl_path
        if p.exists() and not overwrite and p.stat().st_size:
            first = _first_line(p)
            if not first.startswith(b'{"path": '):  # every line this tool writes starts so
                raise UsageError(f"{p}: exists and is not a classify.py --jsonl output (first line {_quoted(first)}, "
                                 f"expected a JSON object starting with \"path\"); name another file "
                                 f"(--overwrite would replace it)")
        if p.exists() and not overwrite:
            kept, seen, changed = [], set(), False
            with open(p, "rb") as fh:
                for line in fh:
                    try:
                        path = json.loads(line)["path"] if line.endswith(b"\n") else None
                    except (ValueError, KeyError, TypeError):
                        path = None
                    if path in done and path not in seen:
                        seen.add(path)
                        kept.append(line)
                    else:
                        changed = True
            if changed:
                write_bytes(p, b"".join(kept))
        elif overwrite or not p.exists():
            write_bytes(p, b"")
        self.jsonl = open(p, "ab", buffering=0)

    def write(self, records: Sequence[dict], failures: Sequence[Tuple[str, str]]) -> None:
        # A path with a line break is refused before any file sees it (resume reads the outputs line
        # by line): it is listed in the errors file only, the same locally and on Ray.
        good, bad = [], []
        for r in records:
            if "\n" in r["path"] or "\r" in r["path"]:
                bad.append((r["path"], "the path contains a line break, which one output line cannot hold; "
                                       "rename the file"))
            else:
                good.append(r)
        records = good
        if self.tags is not None:  # before the CSV rows: a song in the CSV has its tag written
            failures = list(failures) + self.tags.apply(list(records))
        if self.jsonl is not None and records:
            append_whole(self.jsonl, self.jsonl_path,
                         "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        if self.timeline_dir is not None:
            for r in records:
                self._timeline(r)
        extra = self.tags.columns if self.tags is not None else []
        with signals_deferred():  # the rows on disk and the counts move together (SIGINT, SIGTERM)
            self.rows.append(csv_row(r, self.genres) + [r.get(c, "") for c in extra] for r in records)
            self.done_rows.extend([r["path"], r["genre"]] for r in records)
            self.written += len(records)
            self.errors.append(list(failures) + bad)
            self.failed += len(failures) + len(bad)

    def _timeline(self, rec: dict) -> None:
        import matplotlib.pyplot as plt

        from workbench.plots import genre_timeline

        windows = rec["windows"]
        png = self.timeline_dir / timeline_name(rec["path"])
        fig = genre_timeline(windows, self.genres, title=Path(rec["path"]).name)
        try:
            tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp")
            fig.savefig(tmp, format="png", dpi=110)
            os.replace(tmp, png)  # a resumed run never finds a half-written PNG
        finally:
            plt.close(fig)

    def close(self) -> None:
        self.rows.close()
        self.errors.close()
        if self.tags is not None:
            self.tags.close()
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
        for lock in self.locks:
            lock.release()
        self.locks = []


def timeline_name(path: str) -> str:
    """A PNG name unique per song path: the file's stem plus a short hash of the full path (two
    songs called "01 Intro.mp3" in different albums must not overwrite each other)."""
    import hashlib

    stem = re.sub(r"[^\w.\-]+", "_", Path(path).stem)[:80]
    return f"{stem}-{hashlib.blake2b(path.encode(), digest_size=4).hexdigest()}.png"


# ------------------------------------------------------------------------------------------------
# Running


FLUSH_SECONDS = 2.0  # longest a finished song waits for its batch (progress bar, work lost to a kill)


def run_local(model, todo: Sequence[str], settings: Settings, outputs: Outputs, n_jobs: int, chunk_size: int,
              progress) -> None:
    """One worker pool for the whole job (`workbench.batch.iter_extract`, songs in completion
    order, a bounded read-ahead); finished songs are batched, `chunk_size` songs or FLUSH_SECONDS
    at a time, into one forward pass and written."""
    from workbench.batch import embed_pending, iter_extract

    net = model_frontend(model)
    on_device = settings.device != "cpu" and net is not None
    items: list = []
    last = time.monotonic()

    def flush() -> None:
        songs: List[Song] = []
        failures: List[Tuple[str, str]] = []
        for item in embed_pending(items, net, settings.frontend_precision) if on_device else items:
            path = todo[item.index]
            if item.error is not None:
                failures.append((path, _reason(path, item.error)))
            else:
                songs.append(Song(path, item.song))
        outputs.write(predict_songs(model, songs, settings), failures)
        progress(len(items))
        items.clear()

    # On a GPU the chunk's songs share the front end's passes (embed_pending): one pass of
    # patches_per_pass patches there instead of each worker's small CPU passes.
    stream = iter_extract(todo, sr=settings.sr, clip_seconds=settings.clip_seconds, n_jobs=n_jobs,
                          cache_dir=settings.cache_dir, frontend=net, frontend_precision=settings.frontend_precision,
                          frontend_device=settings.device if on_device else None)
    for item in stream:
        items.append(item)
        if len(items) >= chunk_size or time.monotonic() - last >= FLUSH_SECONDS:
            flush()
            last = time.monotonic()
    if items:
        flush()


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
