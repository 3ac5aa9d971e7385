"""classify.py's job and batch feature extraction on Ray: one machine or a cluster.

Ray is an extra (`pip install -r requirements-ray.txt`); only this module imports it, and only
`classify.py --ray` and `train.py --ray` import this module.

- `classify_on_ray(...)`: tasks of one CPU each take chunks of *paths* (never audio bytes: every
  node reads the files from storage they all see); each worker process loads the model once (on
  its first chunk) and computes the features with `workbench.batch.extract_many` and the batched
  predictions with the very function the local run uses (`tagging.classify_paths`). The driver writes rows, errors and resume
  state through the same `tagging.Outputs`, so a Ray run and a local run produce the same rows.
- `extract_many_ray(sources, ...)`: `workbench.batch.extract_many` spread over Ray tasks; returns
  a `workbench.batch.ExtractionResult` with the same fields and indices as the local call.

With no address a local Ray is started (`ray.init(num_cpus=...)`, no dashboard, quiet logs, the
project folder on the workers' PYTHONPATH) and shut down at the end. With an address ("auto",
HOST:PORT, ray://HOST:PORT, or RAY_ADDRESS) the project's code files are shipped to the cluster
as the job's working_dir; the Python packages of requirements.txt must already be on every node.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import fields
from pathlib import Path
from typing import Callable, List, Optional, Sequence

try:
    import ray
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the Ray backend needs Ray: pip install -r requirements-ray.txt") from exc

from workbench import tagging
from workbench.runs import load_model, resolve_model_spec
from workbench.tagging import RayJobError
from workbench.batch import ExtractionResult, _describe
from features import HOP_LENGTH, N_FFT, SAMPLE_RATE

ROOT = Path(__file__).resolve().parent.parent  # the repository, shipped to Ray workers as working_dir

# What not to upload as the job's working_dir to a cluster: environments, runs, caches, data.
CODE_EXCLUDES = [".venv", ".git", "runs", ".cache", "hub_export", "__pycache__", ".pytest_cache", "*.pyc",
                 "examples"]

__all__ = ["classify_on_ray", "extract_many_ray", "init_ray", "RayJobError"]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # Ray wraps worker errors in several lines of traceback; the last line names the cause.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Connect to `address` (or RAY_ADDRESS), or start a quiet local Ray with `num_cpus` CPUs.

    Returns True when this call started or connected Ray (the caller then shuts it down), False
    when Ray was already initialised by the caller."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or upload from a CLI
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address in (None, "local"):
            path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            ray.init(address="local", num_cpus=num_cpus or tagging.available_cpus(), include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, **quiet)
        else:
            ray.init(address=address, runtime_env={"working_dir": str(ROOT), "excludes": CODE_EXCLUDES}, **quiet)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError, ... depending on the failure
        hint = ("" if address in (None, "local") or os.environ.get("RAY_AUTH_MODE") else
                "; a cluster started with token authentication also needs RAY_AUTH_MODE=token and its token here")
        raise RayJobError(f"--ray {address or '(local)'}: cannot start or reach Ray ({_one_line(exc)}){hint}") from exc
    return True


def _cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _single_threaded() -> None:
    """One CPU per actor/task: keep torch and BLAS from starting a thread per core of the node."""
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl is optional; oversubscription only costs speed
        pass


#: Per worker process: models loaded so far, by --model target. Ray reuses a worker process for
#: many tasks, so each worker loads the model once, on its first chunk (and the feature
#: extraction's imports and JIT warm-up are paid once per process too, shared with
#: extract_many_ray's tasks).
_MODELS: dict = {}


def _worker_model(target: str, trust_remote_code: bool = False, revision: Optional[str] = None):
    key = (target, trust_remote_code, revision)
    if key not in _MODELS:
        _single_threaded()
        _MODELS[key] = load_model(target, trust_remote_code=trust_remote_code, revision=revision)
    return _MODELS[key]


@ray.remote(num_cpus=1, max_retries=0)  # a dead worker: _run_tasks runs the chunk song by song
def _classify_chunk(target: str, settings: tagging.Settings, paths: List[str], trust_remote_code: bool = False,
                    revision: Optional[str] = None):
    return tagging.classify_paths(_worker_model(target, trust_remote_code, revision), paths, settings, n_jobs=1)


#: What a task raises when its worker process died (a decoder crash, the out-of-memory killer, a
#: lost node): the chunk is then run again song by song, which is why the tasks leave Ray's own
#: retries off (a deterministic crash would cost three more worker start-ups per try).
_WORKER_DIED = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError)
WORKER_DIED_REASON = "the Ray worker process reading it died"


def _run_tasks(submit: Callable, items: Sequence, on_result: Callable, max_in_flight: int,
               split: Optional[Callable] = None) -> None:
    """Submit `submit(item)` for every item with at most `max_in_flight` running or queued (memory
    and the driver's queue stay bounded), calling `on_result(item, result)` as each finishes.

    A task whose worker process died is run again as `split(item, reason)`'s items (the chunk's
    songs one at a time), so that only the song that kills its worker is lost: for a single song,
    `split` records its failure and returns no items. Without `split`, or on any other Ray error,
    the job ends with RayJobError."""
    todo = deque(items)
    pending: dict = {}
    while todo or pending:
        while todo and len(pending) < max_in_flight:
            item = todo.popleft()
            pending[submit(item)] = item
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            item = pending.pop(ref)
            try:
                result = ray.get(ref)
            except _WORKER_DIED as exc:
                if split is None:
                    raise RayJobError(f"--ray: a Ray worker died ({_one_line(exc)})") from exc
                todo.extendleft(reversed(split(item, _one_line(exc))))
                continue
            except ray.exceptions.RayError as exc:
                raise RayJobError(f"--ray: a Ray task failed ({_one_line(exc)})") from exc
            on_result(item, result)


def classify_on_ray(model_spec: str, paths: Sequence[str], settings: tagging.Settings, outputs: tagging.Outputs, *,
                    address: Optional[str] = None, num_cpus: Optional[int] = None, chunk_size: int = 8,
                    progress: Optional[Callable[[int], None]] = None, trust_remote_code: bool = False,
                    revision: Optional[str] = None) -> None:
    """Classify `paths` on Ray, writing through `outputs` as chunks complete (any order).

    `model_spec` is what --model names; a local path is made absolute (it must be on storage
    every node reads). Raises RayJobError when Ray or a worker fails as a whole (rows written
    so far stay: run again to resume); an unreadable song is an ordinary failure row, as locally."""
    kind, target = resolve_model_spec(model_spec)
    owned = init_ray(address, num_cpus)
    try:
        chunks = [list(paths[s:s + chunk_size]) for s in range(0, len(paths), chunk_size)]

        def write(_chunk, result):
            records, failures = result
            outputs.write(records, failures)
            if progress is not None:
                progress(len(records) + len(failures))

        def split(chunk, reason):
            if len(chunk) > 1:
                return [[path] for path in chunk]
            write(chunk, ([], [(chunk[0], f"{WORKER_DIED_REASON} ({reason})")]))
            return []

        # Two chunks per CPU in flight: a worker never waits for the driver between chunks.
        try:
            _run_tasks(lambda chunk: _classify_chunk.remote(target, settings, chunk, trust_remote_code, revision), chunks, write,
                       2 * _cluster_cpus(), split)
        except RayJobError as exc:
            raise RayJobError(f"{exc}; the rows written so far are kept: run the same command again to resume") from exc
    finally:
        if owned:
            ray.shutdown()


@ray.remote(num_cpus=1, max_retries=0)  # a dead worker: _run_tasks runs the chunk song by song
def _extract_chunk(chunk: list, kwargs: dict) -> ExtractionResult:
    from workbench.batch import extract_many

    _single_threaded()
    return extract_many(chunk, n_jobs=1, progress=False, **kwargs)


def _merge(results: Sequence[ExtractionResult], offsets: Sequence[int]) -> ExtractionResult:
    """One ExtractionResult from per-chunk ones: indices shifted back to `sources`, every list
    aligned with `features` (starts, embeddings, ... whatever extract_many returns) carried along."""
    per_song = [f.name for f in fields(ExtractionResult) if f.name not in ("ok", "failures", "cache_hits")]
    out = ExtractionResult()
    pieces = []
    for res, off in zip(results, offsets):
        n = len(res.ok)
        aligned = {name: getattr(res, name) for name in per_song
                   if isinstance(getattr(res, name, None), (list, tuple)) and len(getattr(res, name)) == n}
        for k, i in enumerate(res.ok):
            pieces.append((off + i, {name: vals[k] for name, vals in aligned.items()}))
        for desc, msg in res.failures:
            if desc.startswith("array[") and desc.endswith("]"):
                desc = f"array[{off + int(desc[6:-1])}]"  # arrays are named by their index in the input
            out.failures.append((desc, msg))
        out.cache_hits += int(getattr(res, "cache_hits", 0) or 0)
    pieces.sort(key=lambda t: t[0])
    for idx, vals in pieces:
        out.ok.append(idx)
        for name, v in vals.items():
            getattr(out, name).append(v)
    return out


def extract_many_ray(sources: Sequence, *, sr: int = SAMPLE_RATE, clip_seconds: Optional[float] = None,
                     cache_dir=None, address: Optional[str] = None, num_cpus: Optional[int] = None,
                     chunk_size: int = 8, progress: Optional[bool] = None, n_fft: int = N_FFT,
                     hop_length: int = HOP_LENGTH, frontend=None) -> ExtractionResult:
    """`workbench.batch.extract_many` on Ray: same arguments and result (ok indices, failures,
    cache hits, and every per-song field), tasks of `chunk_size` sources with one CPU each.

    Paths are sent, not audio; they are made absolute so that a worker whose working directory
    differs finds them (on a cluster they must be on storage every node reads). Arrays travel
    through Ray's object store. `cache_dir` is each node's own cache (None: its default folder).
    `train.py --data-dir DIR --ray [ADDRESS]` calls this in place of `extract_many`."""
    sources = list(sources)
    shipped = [s if not isinstance(s, (str, os.PathLike)) else os.path.abspath(os.fspath(s)) for s in sources]
    kwargs = dict(sr=sr, clip_seconds=clip_seconds, cache_dir=cache_dir, n_fft=n_fft, hop_length=hop_length)
    if frontend is not None:  # "musicnn" or a front-end module (pickled to the workers once per task)
        kwargs["frontend"] = frontend
    owned = init_ray(address, num_cpus)
    try:
        # (first source, count) per task; a chunk whose worker died is run again source by source.
        chunks = [(off, min(chunk_size, len(sources) - off)) for off in range(0, len(sources), chunk_size)]
        results: dict = {}
        show = (len(sources) >= 20) if progress is None else bool(progress)
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(sources), desc="features (ray)", unit="file", disable=not show)
        except ImportError:  # pragma: no cover
            bar = None

        def keep(chunk, result):
            results[chunk[0]] = result
            if bar is not None:
                bar.update(chunk[1])

        def split(chunk, reason):
            off, count = chunk
            if count > 1:
                return [(off + i, 1) for i in range(count)]
            desc = _describe(shipped[off], 0)  # _merge shifts an array's index by its offset
            keep(chunk, ExtractionResult(failures=[(desc, f"{desc}: {WORKER_DIED_REASON} ({reason})")]))
            return []

        # In flight: two chunks per CPU, which also bounds the audio arrays in the object store.
        _run_tasks(lambda chunk: _extract_chunk.remote(shipped[chunk[0]:chunk[0] + chunk[1]], kwargs), chunks, keep,
                   2 * _cluster_cpus(), split)
        if bar is not None:
            bar.close()
        offsets = sorted(results)
        merged = _merge([results[k] for k in offsets], offsets)
    finally:
        if owned:
            ray.shutdown()
    # Failures name the source as the caller gave it (a relative path stays relative).
    by_abs = {str(a): str(s) for a, s in zip(shipped, sources) if isinstance(s, (str, os.PathLike))}
    merged.failures = [(by_abs.get(d, d), m.replace(d, by_abs[d], 1) if d in by_abs else m)
                       for d, m in merged.failures]
    return merged
