"""Tag a music library: audio files, folders and globs in, one row per song out.

Paste-ready:

    python classify.py ~/Music --model runs/latest --out predictions.csv
    python classify.py "~/Music/**/*.mp3" --model you/music-genre-moe --out tags.csv --top-k 3
    python classify.py ~/Music --model runs/latest --out tags.csv --jsonl windows.jsonl --timeline-dir timelines
    python classify.py /shared/music --model /shared/runs/latest --out /shared/tags.csv --ray auto
    python classify.py ~/Music --model runs/latest --out tags.csv --device cuda   # musicnn + MoE on the GPU
    python classify.py ~/Music --model runs/latest --out tags.csv --compare-tags
    python classify.py ~/Music --model runs/latest --out tags.csv --write-tags 2 --dry-run
    python classify.py --restore tags.csv.undo.jsonl

What it does
- Folders are searched recursively for audio files (decoding.AUDIO_EXTENSIONS, hidden files
  skipped); a file named on the command line is taken whatever its extension. WAV, FLAC, OGG,
  Opus, MP3, AU, AIFF (soundfile) and M4A/AAC/ALAC, WMA and the sound of MP4/WebM videos (PyAV,
  `pip install av`); long files are decoded as a stream (a 2-hour mix: ~640 MB above baseline).
- Features come from worker processes (`workbench.batch`), with the model's sampling rate and
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
- The library's own genre tags (ID3, MP4, Vorbis comments, ASF): `--compare-tags` adds each
  file's tag (column `tag`) and writes `<out>.mislabelled.csv`, the songs whose tag a confident
  prediction contradicts, most confident first. `--write-tags [K]` writes the top-1 (or top-K,
  multi-valued) genre into each file: only the tag changes, never the audio; each file is replaced
  atomically; the old values go to an undo log first (`--undo-log`, default `<out>.undo.jsonl`),
  and `python classify.py --restore LOG` puts them back. `--dry-run` writes nothing and says what
  it would (column `tag_written`). Read-only files and containers without tags get a line in the
  errors file. Resume as above: a song in the CSV has its tag written.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from workbench.runs import ModelSpecError, load_model as load_model_spec, resolve_model_spec
from workbench.tagging import (AUDIO_EXTENSIONS, OutputError, Outputs, RayJobError, Settings, UsageError, available_cpus,
                               find_audio, model_genres, run_local)

DEFAULT_TOP_K = 3
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+)$")


def load_model(spec: str, trust_remote_code: bool = False, revision: Optional[str] = None):
    """--model -> the model in eval mode (`workbench.runs.load_model`); errors as UsageError."""
    try:
        return load_model_spec(spec, trust_remote_code=trust_remote_code, revision=revision)
    except ModelSpecError as exc:
        raise UsageError(f"--model {exc}") from None


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
    p.add_argument("--top-k", type=int, help="genres listed per song (default 3, or every genre of a model with fewer)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own Python code (a model of another type); this project's run folders, "
                        "exports and Hub repos never need it")
    p.add_argument("--revision", help="Hub revision (commit, tag or branch) to pin a Hub model to")
    p.add_argument("--frontend-precision", choices=("auto", "fp32", "bf16", "int8"),
                   help="arithmetic of the musicnn front end (default: the model's config.frontend_precision, "
                        "'auto': int8 on CPUs with AVX-512 VNNI and BF16, bf16 with BF16, else fp32); fp32 is exact")
    p.add_argument("--device", default="cpu",
                   help="where the model runs: cpu (default) or cuda / cuda:N; on a GPU the musicnn front end runs "
                        "there on the patches of --chunk-size songs at a time, and the CPU workers decode and "
                        "cut them")
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
    t = p.add_argument_group("the library's genre tags (MP3, M4A/MP4, OGG, Opus, FLAC, WMA, WAV/AIFF with ID3)")
    t.add_argument("--compare-tags", action="store_true",
                   help="add each file's current genre tag (column tag) and list the songs whose tag a confident "
                        "prediction contradicts, most confident first (<out>.mislabelled.csv)")
    t.add_argument("--min-confidence", type=float, default=0.8, metavar="P",
                   help="with --compare-tags: the confidence from which a prediction contradicts a tag (default 0.8)")
    t.add_argument("--write-tags", type=int, nargs="?", const=1, default=0, metavar="K",
                   help="write the predicted genre into each file's genre tag (K: the top K as a multi-valued tag, "
                        "default 1); only the tag changes, never the audio; old values go to the undo log")
    t.add_argument("--dry-run", action="store_true", help="with --write-tags: say what would be written, write nothing")
    t.add_argument("--undo-log", metavar="LOG", help="with --write-tags: the undo log (JSON lines; default <out>.undo.jsonl)")
    t.add_argument("--restore", metavar="LOG",
                   help="put back the genre tags an undo log recorded, and stop (no PATH, --model or --out needed)")
    return p.parse_args(argv)


def _check_tag_flags(args) -> None:
    if args.write_tags < 0:
        raise UsageError(f"--write-tags {args.write_tags}: expected 1 or more genres to write")
    if (args.dry_run or args.undo_log) and not args.write_tags:
        raise UsageError(f"{'--dry-run' if args.dry_run else '--undo-log'}: only used with --write-tags")
    if not 0 <= args.min_confidence <= 1:
        raise UsageError(f"--min-confidence {args.min_confidence}: expected a confidence in [0, 1]")


def validate(args) -> dict:
    """Check every argument before any work; raise UsageError naming the first bad one."""
    _check_tag_flags(args)
    if args.top_k is not None and args.top_k < 1:
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
            from workbench.plots import genre_timeline  # noqa: F401
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
    try:
        resolve_model_spec(args.model)  # cheap shape check before the (slower) load
    except ModelSpecError as exc:
        raise UsageError(f"--model {exc}") from None
    undo = Path(args.undo_log).expanduser() if args.undo_log else out.with_name(out.name + ".undo.jsonl")
    return {"out": out, "errors": errors, "jsonl": jsonl, "timeline": timeline, "cache": cache,
            "files": files, "ignored": ignored, "address": address, "undo": undo, "device": _check_device(args)}


def _check_device(args) -> str:
    """--device as torch names it ("cpu", "cuda:0"), or UsageError: an unknown name, no CUDA, a GPU
    index past the last, a precision the device cannot run, or --ray (its workers are CPUs)."""
    import torch

    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {args.device}: expected cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise UsageError(f"--device {args.device}: expected cpu, cuda or cuda:N, got a {device.type} device")
    if args.ray is not None:
        raise UsageError(f"--device {args.device}: not with --ray (the Ray workers run the model on their CPUs)")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}, "
                         f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU found'})")
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if args.frontend_precision == "int8":
        raise UsageError(f"--frontend-precision int8 runs on the CPU only, not --device {args.device} "
                         f"(use fp32 or bf16 there)")
    return f"cuda:{index}"


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


def restore_main(log: str) -> int:
    """--restore LOG: the old genre tags back, one line per file."""
    from workbench.tags import TagError, restore

    if not Path(log).expanduser().is_file():
        print(f"classify.py: error: --restore {log}: no such undo log", file=sys.stderr)
        return 2
    try:
        outcomes = restore(Path(log).expanduser())
    except TagError as exc:
        print(f"classify.py: error: --restore {exc}", file=sys.stderr)
        return 2
    for path, outcome in outcomes:
        print(f"{path}: {outcome}")
    counts = Counter(o.split(":")[0] for _, o in outcomes)
    print(f"{log}: " + (", ".join(f"{n} {k}" for k, n in counts.most_common()) or "empty"))
    return 1 if counts.get("error") else 0


def report_mislabelled(out: Path, min_confidence: float) -> str:
    """--compare-tags: every song of the output whose tag a confident prediction contradicts, most
    confident first, into <out>.mislabelled.csv; returns the summary line."""
    from workbench.atomic_files import write_text
    from workbench.tags import contradicted_tags, split_genres

    with open(out, newline="", encoding="utf-8") as fh:
        rows = [(r["path"], r["genre"], float(r["confidence"]), split_genres([r["tag"]])) for r in csv.DictReader(fh)]
    found = contradicted_tags(rows, min_confidence=min_confidence)
    target = out.with_name(out.name + ".mislabelled.csv")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "predicted", "confidence", "tag"])
    writer.writerows([path, genre, f"{conf:.6f}", "; ".join(tag)] for path, genre, conf, tag in found)
    write_text(target, buf.getvalue())
    shown = "".join(f"\n  {conf:.2f} {genre:12s} tagged {'; '.join(tag)}: {path}" for path, genre, conf, tag in found[:10])
    return (f"{target}: {len(found)} songs whose tag a prediction of confidence >= {min_confidence:g} contradicts"
            + shown + (f"\n  ... {len(found) - 10} more" if len(found) > 10 else ""))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    restoring = [a for a in argv if a == "--restore" or a.startswith("--restore=")]
    if restoring:
        i = argv.index(restoring[0])
        log = argv[i].split("=", 1)[1] if "=" in argv[i] else (argv[i + 1] if i + 1 < len(argv) else "")
        return restore_main(log)
    # Unreadable files are reported in the errors file and the summary; workbench.batch's per-file
    # warnings would only repeat them on the terminal, through the progress bar.
    logging.getLogger("workbench.batch").setLevel(logging.ERROR)
    try:
        args = parse_args(argv)
        v = validate(args)
        model = load_model(args.model, args.trust_remote_code, args.revision)
        if v["device"] != "cpu":
            from frontend import resolve_precision

            try:  # e.g. a model whose config.frontend_precision is "int8", sent to a GPU
                resolve_precision(args.frontend_precision or getattr(model.config, "frontend_precision", "auto"),
                                  v["device"])
            except ValueError as exc:
                raise UsageError(f"--device {v['device']}: {exc}") from None
            model.to(v["device"])
        genres = model_genres(model)
        if args.top_k is None:
            args.top_k = min(DEFAULT_TOP_K, len(genres))
        elif args.top_k > len(genres):
            raise UsageError(f"--top-k {args.top_k}: the model has only {len(genres)} genres")
        tags = None
        if args.compare_tags or args.write_tags:
            from workbench.tags import LibraryTags

            if args.write_tags > len(genres):
                raise UsageError(f"--write-tags {args.write_tags}: the model has only {len(genres)} genres")
            tags = LibraryTags(args.compare_tags, args.write_tags, args.dry_run, v["undo"])
        outputs = Outputs(v["out"], v["errors"], v["jsonl"], v["timeline"], genres, args.top_k, tags=tags)
        skip = outputs.open(args.overwrite, args.retry_errors)
    except UsageError as exc:
        print(f"classify.py: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # opening the outputs on a full disk (the header, the lock)
        print(f"classify.py: error: {exc.filename or v['out']}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    c = model.config
    settings = Settings(sr=int(c.sampling_rate), clip_seconds=float(c.clip_seconds), top_k=args.top_k,
                        batch_windows=args.batch_windows,
                        want_windows=v["jsonl"] is not None or v["timeline"] is not None, cache_dir=v["cache"],
                        frontend_precision=args.frontend_precision or getattr(c, "frontend_precision", "auto"),
                        device=v["device"])
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
            from workbench import ray_backend

            ray_backend.classify_on_ray(args.model, todo, settings, outputs, address=v["address"],
                                        num_cpus=args.ray_cpus, chunk_size=args.chunk_size or 8, progress=progress,
                                        trust_remote_code=args.trust_remote_code, revision=args.revision)
        elif todo:
            n_jobs = args.n_jobs or available_cpus()
            run_local(model, todo, settings, outputs, n_jobs, args.chunk_size or 8 * n_jobs, progress)
    except KeyboardInterrupt:
        code = 130
    except RayJobError as exc:
        print(f"classify.py: error: {exc}", file=sys.stderr)
        code = 1
    except OutputError as exc:  # a full disk: the outputs hold whole lines only, so resume is right
        print(f"classify.py: error: {exc}; {outputs.written} songs written this run: free some space and run the "
              f"same command again to resume", file=sys.stderr)
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
    if args.compare_tags:
        print(report_mislabelled(v["out"], args.min_confidence))
    if args.write_tags:
        print(f"{v['undo']}: old genre tags (undo with: python classify.py --restore {v['undo']})"
              if not args.dry_run else "--dry-run: no tag written (column tag_written: what would be)")
    return code


if __name__ == "__main__":
    sys.exit(main())
