"""Tag a music library: audio files, folders and globs in, one row per song out.

Paste-ready:

    python classify.py ~/Music --model runs/latest --out predictions.csv
    python classify.py "~/Music/**/*.mp3" --model you/music-genre-moe --out tags.csv --top-k 3
    python classify.py ~/Music --model runs/latest --out tags.csv --jsonl windows.jsonl --timeline-dir timelines
    python classify.py /shared/music --model /shared/runs/latest --out /shared/tags.csv --ray auto

What it does
- Folders are searched recursively for audio files (AUDIO_EXTENSIONS, hidden files skipped); a
  file named on the command line is taken whatever its extension. Any format `features.load_audio`
  reads (WAV, FLAC, OGG, MP3, AU, AIFF).
- Features come from worker processes (`batch_features`), with the model's sampling rate and
  window length; the windows of many songs go through the model together. Memory stays bounded by
  the workers' songs (one each) plus one chunk of feature rows.
- `--out` (CSV) gets one row per song: path, the predicted genre and its confidence, the top-k
  genres with probabilities, duration, number of windows and the mean gate weight of every expert.
  `--jsonl` adds a per-window timeline per song; `--timeline-dir` one PNG per song.
- A file that cannot be read goes to the errors file (`--errors`, default `<out>.errors.csv`:
  path, reason) and is skipped.
- Resumable: the output files are appended whole lines at a time (flush + fsync), so an
  interrupted run leaves at most one torn last line, which the next run drops; songs already in
  the output (or the errors file) are skipped. `--overwrite` starts afresh.
- `--ray [ADDRESS]` runs the same job on Ray (see `ray_backend.py`); same rows, errors and resume.
"""

from __future__ import annotations

import argparse
import csv
import glob
import inspect
import io
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent

# What a folder search picks up. soundfile (libsndfile) decodes all of these; a file named
# explicitly is tried whatever its extension, so an unusual container still works when asked for.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".snd", ".aiff", ".aif",
                    ".aifc", ".caf", ".w64", ".rf64")

CHECKPOINT_NAME = "moe_genre_checkpoint.pt"
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+)$")


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
# The model


def resolve_model(spec: str) -> Tuple[str, str]:
    """(how to load, what to load) for --model: ("project", path) or ("remote", folder or Hub id).

    - a run folder (train.py's), a `save_pretrained` folder or a `.pt` checkpoint: this project's
      `modeling.load_moe_model`;
    - a folder exported by `upload_to_hub.py` (it carries its own `modeling.py`) or a Hub id:
      `AutoModel.from_pretrained(..., trust_remote_code=True)`, the way any Hub user loads it.
    """
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "modeling.py").is_file() and (p / "config.json").is_file():
            return "remote", str(p.resolve())
        if (p / "config.json").is_file() or (p / CHECKPOINT_NAME).is_file() or (p / "hf_model" / "config.json").is_file():
            return "project", str(p.resolve())
        raise UsageError(f"--model {spec}: folder holds no model (expected config.json, hf_model/ or {CHECKPOINT_NAME})")
    if p.is_file():
        if p.suffix != ".pt":
            raise UsageError(f"--model {spec}: expected a .pt checkpoint, a model folder or a Hub id, got a {p.suffix or 'plain'} file")
        return "project", str(p.resolve())
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", spec) and not spec.startswith((".", "/")):
        return "remote", spec
    raise UsageError(f"--model {spec}: no such file or folder, and not a Hub id (user/name)")


def load_model(spec: str):
    """The model in eval mode, from anything `resolve_model` accepts (errors as UsageError)."""
    kind, target = resolve_model(spec)
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load (and per Ray worker) is noise
    try:
        if kind == "remote":
            from transformers import AutoModel

            model = AutoModel.from_pretrained(target, trust_remote_code=True)
        else:
            from modeling import load_moe_model

            path = Path(target)
            # A run folder: its save_pretrained copy if present, else the checkpoint (load_moe_model
            # reads both; newer versions take the run folder itself too).
            if path.is_dir() and not (path / "config.json").is_file():
                path = path / "hf_model" if (path / "hf_model" / "config.json").is_file() else path / CHECKPOINT_NAME
            model = load_moe_model(str(path))[0]
    except UsageError:
        raise
    except Exception as exc:  # torch, safetensors, transformers and the Hub raise many types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--model {spec}: cannot load ({type(exc).__name__}: {msg})") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.eval()
    c = model.config
    if getattr(c, "feature_mean", None) is None or getattr(c, "feature_std", None) is None:
        raise UsageError(f"--model {spec}: the config has no feature_mean/feature_std (an untrained model?)")
    return model


def _genres(model) -> List[str]:
    c = model.config
    return [c.id2label[i] for i in range(c.num_labels)]


# ------------------------------------------------------------------------------------------------
# Songs -> predictions (shared by the local pool and the Ray workers)


@dataclass
class Settings:
    """Everything a worker needs besides the model; plain values so that Ray can ship it."""

    sr: int
    clip_seconds: float
    top_k: int = 3
    batch_windows: int = 4096      # windows per forward pass
    want_windows: bool = False     # per-window results (for --jsonl / --timeline-dir)
    cache_dir: object = False      # batch_features cache: False (off), None (default) or a folder


@dataclass
class SongFeatures:
    path: str
    features: np.ndarray                 # (n_windows, num_features), raw (the model z-scores)
    starts: np.ndarray                   # first sample of each kept window (silent ones are skipped)
    duration_s: Optional[float] = None


def audio_duration(path: str) -> Optional[float]:
    """Seconds, from the file's header (no decoding); None when the header does not say."""
    try:
        import soundfile

        info = soundfile.info(path)
        return float(info.frames) / float(info.samplerate) if info.frames > 0 else None
    except Exception:  # the features came out fine, so a header quirk must not fail the song
        return None


def complete_song(path: str, feats: np.ndarray, starts) -> SongFeatures:
    """One song's features with its windows' first samples (from batch_features) and duration."""
    return SongFeatures(path, np.asarray(feats, dtype=np.float32), np.asarray(starts, dtype=np.int64),
                        audio_duration(path))


def _forward_kwargs(fn) -> dict:
    # This project's model always takes raw features. A model exported by an earlier version (its own
    # remote code) defaulted to already-z-scored input: tell it the features are raw.
    return {"already_normalised": False} if "already_normalised" in inspect.signature(fn).parameters else {}


def score_windows(model, feats: np.ndarray, batch_windows: int):
    """(probs (N, C), gate weights (N, E), few-shot embedding (N, D) or None) for raw features,
    in forward passes of at most `batch_windows` windows."""
    import torch

    c = model.config
    # Few-shot genres only compete when added genres exist besides the trained ones (as in
    # modeling's _results); only then is the few-shot embedding needed.
    protos = getattr(c, "prototypes", None) or {}
    need_fewshot = len(protos) > c.num_labels
    probs, gates, embs = [], [], []
    kw = _forward_kwargs(model.forward)
    with torch.no_grad():
        for s in range(0, len(feats), batch_windows):
            x = torch.from_numpy(np.ascontiguousarray(feats[s:s + batch_windows], dtype=np.float32))
            out = model(input_features=x, **kw)
            probs.append(out.logits.softmax(-1))
            gates.append(out.gate_weights)
            if need_fewshot:
                embs.append(model.fewshot_embed(x, **_forward_kwargs(model.fewshot_embed)))
    cat = torch.cat
    return cat(probs), cat(gates), (cat(embs) if need_fewshot else None)


def _r(v: float) -> float:
    return round(float(v), 6)


def predict_songs(model, songs: Sequence[SongFeatures], settings: Settings) -> List[dict]:
    """One record per song: the song's verdict exactly as `model.predict_audio` gives it (window
    probabilities and gate weights averaged), top-k genres and, if asked, every window's result.

    All the songs' windows go through the model together."""
    if not songs:
        return []
    import torch

    counts = [len(s.features) for s in songs]
    probs, gates, emb = score_windows(model, np.concatenate([s.features for s in songs]), settings.batch_windows)
    genres = _genres(model)
    records = []
    offset = 0
    for song, n in zip(songs, counts):
        sl = slice(offset, offset + n)
        offset += n
        p, g = probs[sl], gates[sl]
        e = emb[sl] if emb is not None else torch.zeros(n, 1)
        # modeling's _results names the genre (a few-shot genre included) the way predict_audio does.
        verdict = model._results(p.mean(0, keepdim=True), g.mean(0, keepdim=True), e.mean(0, keepdim=True))[0]
        mean_p = p.mean(0).tolist()
        order = sorted(range(len(genres)), key=lambda i: -mean_p[i])[:settings.top_k]
        rec = {
            "path": song.path,
            "genre": verdict["predicted_genre"],
            "confidence": _r(verdict["confidence"]),
            "top": [[genres[i], _r(mean_p[i])] for i in order],
            "duration_s": None if song.duration_s is None else round(song.duration_s, 3),
            "num_windows": n,
            "probabilities": {k: _r(v) for k, v in verdict["probabilities"].items()},
            "gate_weights": {k: _r(v) for k, v in verdict["gate_weights"].items()},
        }
        if "prototype_scores" in verdict:
            rec["prototype_scores"] = {k: _r(v) for k, v in verdict["prototype_scores"].items()}
        if settings.want_windows:
            rec["windows"] = _window_records(model, song, p, g, e, settings)
        records.append(rec)
    return records


def _window_records(model, song: SongFeatures, p, g, e, settings: Settings) -> List[dict]:
    per = model._results(p, g, e)
    out = []
    for k, r in enumerate(per):
        start = float(song.starts[k]) / settings.sr
        end = start + settings.clip_seconds
        if song.duration_s is not None:  # a short song is one (repeated) window: it ends with the song
            end = min(end, song.duration_s)
        start, end = round(start, 3), round(end, 3)
        out.append({"start": start, "end": end, "genre": r["predicted_genre"], "confidence": _r(r["confidence"]),
                    "probabilities": {k2: _r(v) for k2, v in r["probabilities"].items()},
                    "gate_weights": {k2: _r(v) for k2, v in r["gate_weights"].items()}})
    return out


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
    """(songs, failures) for some paths, through batch_features.extract_many."""
    from batch_features import extract_many

    res = extract_many(list(paths), sr=settings.sr, clip_seconds=settings.clip_seconds, n_jobs=n_jobs,
                       cache_dir=settings.cache_dir, progress=False, frontend=frontend)
    return _songs_from_result(paths, res, settings)


def _songs_from_result(paths: Sequence[str], res, settings: Settings):
    songs = [complete_song(str(paths[i]), f, s) for i, f, s in zip(res.ok, res.features, res.starts)]
    failures = [(str(src), _reason(str(src), msg)) for src, msg in res.failures]
    return songs, failures


def classify_paths(model, paths: Sequence[str], settings: Settings, n_jobs: Optional[int] = 1):
    """(records, failures) for some paths: features, then one batched prediction. A Ray worker
    calls this on its chunk; the local run streams the same features (`run_local`) into the same
    `predict_songs`, which is why local and Ray runs give the same rows."""
    songs, failures = extract_chunk(paths, settings, n_jobs, model_frontend(model))
    return predict_songs(model, songs, settings), failures


# ------------------------------------------------------------------------------------------------
# Output: append-only, fsynced, resumable


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename: a reader sees the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
            _atomic_write(self.path, _csv_line(self.header).encode("utf-8"))
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


def csv_header(genres: Sequence[str], top_k: int) -> List[str]:
    cols = ["path", "genre", "confidence"]
    for k in range(1, top_k + 1):
        cols += [f"top{k}", f"top{k}_prob"]
    return cols + ["duration_s", "num_windows"] + [f"gate_{g}" for g in genres]


def csv_row(rec: dict, genres: Sequence[str]) -> List[str]:
    row = [rec["path"], rec["genre"], f"{rec['confidence']:.6f}"]
    for g, p in rec["top"]:
        row += [g, f"{p:.6f}"]
    row += ["" if rec["duration_s"] is None else f"{rec['duration_s']:.3f}", str(rec["num_windows"])]
    return row + [f"{rec['gate_weights'][g]:.6f}" for g in genres]


class Outputs:
    """The run's files: predictions CSV, errors CSV, optional JSONL timelines and PNGs.

    Write order per batch: JSONL and PNGs first, then the CSV rows (the record of what is done),
    so a crash in between only means those songs are redone on resume."""

    def __init__(self, out: Path, errors: Path, jsonl: Optional[Path], timeline_dir: Optional[Path],
                 genres: List[str], top_k: int):
        self.genres = genres
        self.rows = AppendLog(out, csv_header(genres, top_k))
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
                _atomic_write(p, b"".join(kept))
        elif overwrite or not p.exists():
            _atomic_write(p, b"")
        self.jsonl = open(p, "ab")

    def write(self, records: Sequence[dict], failures: Sequence[Tuple[str, str]]) -> None:
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
        self.rows.append(csv_row(r, self.genres) for r in good)
        self.errors.append(list(failures) + bad)
        self.done_rows.extend([r["path"], r["genre"]] for r in good)
        self.written += len(good)
        self.failed += len(failures) + len(bad)

    def _timeline(self, rec: dict) -> None:
        import matplotlib.pyplot as plt

        from plots import genre_timeline

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
    from batch_features import iter_extract

    songs: List[SongFeatures] = []
    failures: List[Tuple[str, str]] = []
    last = time.monotonic()

    def flush() -> None:
        outputs.write(predict_songs(model, songs, settings), failures)
        progress(len(songs) + len(failures))
        songs.clear()
        failures.clear()

    stream = iter_extract(todo, sr=settings.sr, clip_seconds=settings.clip_seconds, n_jobs=n_jobs,
                          cache_dir=settings.cache_dir, frontend=model_frontend(model), return_starts=True)
    for index, feats, error, starts in stream:
        path = todo[index]
        if error is not None:
            failures.append((path, _reason(path, error)))
        else:
            songs.append(complete_song(path, feats, starts))
        if len(songs) + len(failures) >= chunk_size or time.monotonic() - last >= FLUSH_SECONDS:
            flush()
            last = time.monotonic()
    if songs or failures:
        flush()


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error here (argparse adds the usage)
        raise UsageError(f"{message} (see --help)")


def parse_args(argv=None):
    p = _Parser(prog="classify.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files, folders (searched recursively) or globs")
    p.add_argument("--model", required=True,
                   help="run folder, save_pretrained or exported folder, .pt checkpoint, or Hub id (user/name)")
    p.add_argument("--out", required=True, help="predictions CSV (appended to and resumed if it exists)")
    p.add_argument("--errors", help="errors CSV (path, reason); default: <out>.errors.csv")
    p.add_argument("--jsonl", help="also write per-window timelines, one JSON line per song")
    p.add_argument("--timeline-dir", help="also write one PNG per song: genre probabilities across the song")
    p.add_argument("--top-k", type=int, default=3, help="genres listed per song (default 3)")
    p.add_argument("--n-jobs", type=int, help="feature worker processes (default: every core)")
    p.add_argument("--chunk-size", type=int,
                   help="songs per feature job and per batched forward (default: 8 per worker; Ray: 8 per task)")
    p.add_argument("--batch-windows", type=int, default=4096, help="most windows per forward pass (default 4096)")
    p.add_argument("--cache-dir",
                   help="feature cache folder (default: none; resuming already skips finished songs)")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--retry-errors", action="store_true", help="try again the files listed in the errors file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: no ADDRESS starts a local Ray; 'auto' or HOST:PORT joins a cluster "
                        "(or set RAY_ADDRESS and pass --ray alone)")
    p.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray started by --ray without address (default: every core)")
    return p.parse_args(argv)


def validate(args) -> dict:
    """Check every argument before any work; raise UsageError naming the first bad one."""
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: expected 1 or more")
    for name in ("n_jobs", "chunk_size", "batch_windows", "ray_cpus"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} {v}: expected 1 or more")
    if args.ray is not None and args.ray and not _RAY_ADDRESS.match(args.ray):
        raise UsageError(f"--ray {args.ray}: not a Ray address (auto, HOST:PORT or ray://HOST:PORT); "
                         f"put PATHs before --ray or write --ray=ADDRESS")
    if args.n_jobs is not None and args.ray is not None:
        raise UsageError(f"--n-jobs {args.n_jobs}: only for the local pool; on Ray every CPU is a worker "
                         f"(--ray-cpus sets a local Ray's)")
    if args.ray_cpus is not None and args.ray is None:
        raise UsageError(f"--ray-cpus {args.ray_cpus}: only used with --ray")
    address = (args.ray or os.environ.get("RAY_ADDRESS") or None) if args.ray is not None else None
    if args.ray_cpus is not None and address:
        raise UsageError(f"--ray-cpus {args.ray_cpus}: only for a local Ray; a cluster ({address}) has its own CPUs")
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--ray: Ray is not installed; pip install -r requirements-ray.txt") from None

    out = Path(args.out).expanduser()
    errors = Path(args.errors).expanduser() if args.errors else out.with_name(out.name + ".errors.csv")
    jsonl = Path(args.jsonl).expanduser() if args.jsonl else None
    timeline = Path(args.timeline_dir).expanduser() if args.timeline_dir else None
    named = {"--out": out, "--errors": errors, "--jsonl": jsonl}
    for flag, path in named.items():
        if path is None:
            continue
        if path.is_dir():
            raise UsageError(f"{flag} {path}: is a folder, expected a file")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise UsageError(f"{flag} {path}: not writable")
    resolved = {f: p.resolve() for f, p in named.items() if p is not None}
    if len(set(resolved.values())) < len(resolved):
        raise UsageError(f"--out, --errors and --jsonl must be different files, got {', '.join(map(str, named.values()))}")
    if timeline is not None:
        if timeline.exists() and not timeline.is_dir():
            raise UsageError(f"--timeline-dir {timeline}: exists and is not a folder")
        try:
            import matplotlib  # noqa: F401
            from plots import genre_timeline  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--timeline-dir {timeline}: plotting unavailable ({exc})") from None
        if not timeline.exists() and not (timeline.parent.is_dir() and os.access(timeline.parent, os.W_OK)):
            raise UsageError(f"--timeline-dir {timeline}: cannot create it (parent missing or not writable)")
    cache = False
    if args.cache_dir:
        cache = Path(args.cache_dir).expanduser()
        if cache.exists() and not cache.is_dir():
            raise UsageError(f"--cache-dir {cache}: exists and is not a folder")
    files, ignored = find_audio(args.paths)
    if not files:
        raise UsageError(f"PATH {' '.join(args.paths)}: no audio files found ({', '.join(AUDIO_EXTENSIONS)})")
    resolve_model(args.model)  # cheap shape check before the (slower) load
    return {"out": out, "errors": errors, "jsonl": jsonl, "timeline": timeline, "cache": cache,
            "files": files, "ignored": ignored, "address": address}


def summary(outputs: Outputs, new: int, failed: int, skipped: int, ignored: int, seconds: float) -> str:
    counts = Counter(r[1] for r in outputs.done_rows)
    lines = [f"classified {new} songs in {seconds:.1f} s ({new / seconds if seconds > 0 else 0:.2f} songs/s); "
             f"{failed} failed; {skipped} skipped (already in the output or errors file)"
             + (f"; {ignored} non-audio files in folders ignored" if ignored else "")]
    total = sum(counts.values())
    lines.append(f"{outputs.rows.path}: {total} songs: "
                 + (", ".join(f"{g} {n}" for g, n in counts.most_common()) if counts else "none"))
    n_err = len(outputs.done_errors) + outputs.failed
    lines.append(f"{outputs.errors.path}: {n_err} failures" + (" (path, reason)" if n_err else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    # Unreadable files are reported in the errors file and the summary; batch_features' per-file
    # warnings would only repeat them on the terminal, through the progress bar.
    logging.getLogger("batch_features").setLevel(logging.ERROR)
    try:
        args = parse_args(argv)
        v = validate(args)
        model = load_model(args.model)
        genres = _genres(model)
        if args.top_k > len(genres):
            raise UsageError(f"--top-k {args.top_k}: the model has only {len(genres)} genres")
        outputs = Outputs(v["out"], v["errors"], v["jsonl"], v["timeline"], genres, args.top_k)
        skip = outputs.open(args.overwrite, args.retry_errors)
    except UsageError as exc:
        print(f"classify.py: error: {exc}", file=sys.stderr)
        return 2

    c = model.config
    settings = Settings(sr=int(c.sampling_rate), clip_seconds=float(c.clip_seconds), top_k=args.top_k,
                        batch_windows=args.batch_windows,
                        want_windows=v["jsonl"] is not None or v["timeline"] is not None, cache_dir=v["cache"])
    todo = [f for f in v["files"] if f not in skip]
    skipped = len(v["files"]) - len(todo)
    if skipped:
        print(f"resuming: {skipped} of {len(v['files'])} songs already done, {len(todo)} to go", file=sys.stderr)

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in requirements.txt
        tqdm = None
    bar = tqdm(total=len(todo), unit="song", desc="classify", disable=args.no_progress or tqdm is None,
               smoothing=0.1) if tqdm else None

    def progress(n: int) -> None:
        if bar is not None:
            bar.update(n)

    t0 = time.perf_counter()
    code = 0
    try:
        if todo and args.ray is not None:
            import ray_backend

            ray_backend.classify_on_ray(args.model, todo, settings, outputs, address=v["address"],
                                        num_cpus=args.ray_cpus, chunk_size=args.chunk_size or 8, progress=progress)
        elif todo:
            n_jobs = args.n_jobs or available_cpus()
            run_local(model, todo, settings, outputs, n_jobs, args.chunk_size or 8 * n_jobs, progress)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        if type(exc).__name__ != "RayJobError":
            raise
        print(f"classify.py: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        if bar is not None:
            bar.close()
        outputs.close()
    seconds = time.perf_counter() - t0
    if code:
        if code == 130:
            print(f"interrupted: {outputs.written} songs written this run; run the same command again to resume",
                  file=sys.stderr)
        return code
    print(summary(outputs, outputs.written, outputs.failed, skipped, v["ignored"], seconds))
    return code


if __name__ == "__main__":
    sys.exit(main())
