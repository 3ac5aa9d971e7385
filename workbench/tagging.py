"""Tagging a library: song batches through the one song path, the output files, and resume.

classify.py is the command. The same functions run in the local worker pool (`run_local`) and
in Ray workers (`classify_paths`), which is why a local and a Ray run write the same rows.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import sys
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
                                    cache_dir=settings.cache_dir, frontend=frontend), key=lambda e: e.index):
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


def _drop_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write interrupted mid-line). Returns bytes dropped."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return 0
        # Scan back for the last newline, in blocks (the file may be large).
        pos, keep = size, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = pos + nl + 1
                break
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


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
        """Open for appending; returns the rows already there (after dropping a torn last line)."""
        rows: List[List[str]] = []
        if self.path.exists() and not overwrite:
            dropped = _drop_torn_tail(self.path)
            if dropped:
                print(f"{self.path}: dropped an incomplete last line ({dropped} bytes) left by an interrupted run",
                      file=sys.stderr)
            with open(self.path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                head = next(reader, None)
                if head is not None and head != self.header:
                    raise UsageError(
                        f"{self.path}: existing file has other columns ({','.join(head[:6])}...): it was written "
                        f"with another model or --top-k; use another output or --overwrite")
                for n, row in enumerate(reader, start=2):
                    if len(row) != len(self.header):
                        raise UsageError(f"{self.path}: line {n} has {len(row)} fields, expected {len(self.header)}; "
                                         f"the file was edited or corrupted: fix it or use --overwrite")
                    rows.append(row)
        if overwrite or not self.path.exists() or self.path.stat().st_size == 0:
            write_bytes(self.path, _csv_line(self.header).encode("utf-8"))
        self.fh = open(self.path, "ab")
        return rows

    def append(self, rows: Iterable[Sequence]) -> None:
        data = "".join(_csv_line(r) for r in rows).encode("utf-8")
        if data:
            self.fh.write(data)  # one write per batch: whole lines
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


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

    def open(self, overwrite: bool, retry_errors: bool) -> set:
        """Open everything; returns the paths to skip (already classified, or failed before)."""
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
        self.jsonl = open(p, "ab")

    def write(self, records: Sequence[dict], failures: Sequence[Tuple[str, str]]) -> None:
        if self.tags is not None:  # before the CSV rows: a song in the CSV has its tag written
            failures = list(failures) + self.tags.apply(list(records))
        if self.jsonl is not None and records:
            self.jsonl.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
            self.jsonl.flush()
            os.fsync(self.jsonl.fileno())
        if self.timeline_dir is not None:
            for r in records:
                self._timeline(r)
        good, bad = [], []
        for r in records:
            if "\n" in r["path"] or "\r" in r["path"]:  # resume reads the CSV line by line
                bad.append((r["path"], "the path contains a line break, which one CSV line cannot hold"))
            else:
                good.append(r)
        extra = self.tags.columns if self.tags is not None else []
        self.rows.append(csv_row(r, self.genres) + [r.get(c, "") for c in extra] for r in good)
        self.errors.append(list(failures) + bad)
        self.done_rows.extend([r["path"], r["genre"]] for r in good)
        self.written += len(good)
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
    """One worker pool for the whole job (`batch_features.iter_extract`, songs in completion
    order, a bounded read-ahead); finished songs are batched, `chunk_size` songs or FLUSH_SECONDS
    at a time, into one forward pass and written."""
    from workbench.batch import iter_extract

    songs: List[Song] = []
    failures: List[Tuple[str, str]] = []
    last = time.monotonic()

    def flush() -> None:
        outputs.write(predict_songs(model, songs, settings), failures)
        progress(len(songs) + len(failures))
        songs.clear()
        failures.clear()

    stream = iter_extract(todo, sr=settings.sr, clip_seconds=settings.clip_seconds, n_jobs=n_jobs,
                          cache_dir=settings.cache_dir, frontend=model_frontend(model))
    for item in stream:
        path = todo[item.index]
        if item.error is not None:
            failures.append((path, _reason(path, item.error)))
        else:
            songs.append(Song(path, item.song))
        if len(songs) + len(failures) >= chunk_size or time.monotonic() - last >= FLUSH_SECONDS:
            flush()
            last = time.monotonic()
    if songs or failures:
        flush()


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
