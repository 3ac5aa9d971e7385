"""Feature extraction speed: plain per-call librosa (the seed's way) vs. ``extract_many``.

All modes run on the same 30-s clips in one run: the GTZAN clips in ../shared/data/gtzan-mini-dev
when present, else synthetic 30-s clips written to a temporary folder. The reference is serial
(``load_audio`` + :func:`features.reference_features` per file, as the seed notebook did). Then
``extract_many`` without the cache, in this process (``n_jobs=1``) and with the worker pool, on
batches of several sizes (each batch a separate call, so each pays the pool's start-up), and with a
cold and a warm cache. Every line gives per-clip milliseconds and the throughput ratio against the
reference measured in the same run; the script checks the features agree (58 within 1e-4
relative, harmonic ratio Pearson r >= 0.98) and exits 1 if not.

Usage::

    python benchmarks/bench_features.py                  # 20 clips, batches of 4, 8 and 20
    python benchmarks/bench_features.py --n 50 --batches 4 8 16 50
    python benchmarks/bench_features.py --quick          # 8 clips
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import batch as batch_features  # noqa: E402
import features  # noqa: E402
from workbench import synth  # noqa: E402

GTZAN = ROOT.parent / "shared" / "data" / "gtzan-mini-dev"


def clip_paths(n: int, tmp: Path):
    """``n`` 30-s clip paths: GTZAN (genre-interleaved) if present, else synthetic WAVs."""
    if GTZAN.is_dir():
        by_genre = [sorted(d.glob("*.wav")) for d in sorted(GTZAN.iterdir()) if d.is_dir()]
        interleaved = [f for group in zip(*by_genre) for f in group]
        if interleaved:
            return [str(p) for p in interleaved[:n]], "GTZAN mini-dev (30 s, 22,050 Hz WAV)"
    import soundfile as sf

    genres = list(synth.GENRE_GENERATORS)
    paths = []
    for i in range(n):
        g = genres[i % len(genres)]
        y = synth.generate_clip(g, np.random.default_rng(i), duration=30.0)
        p = tmp / f"{g}_{i:03d}.wav"
        sf.write(p, y, features.SAMPLE_RATE)
        paths.append(str(p))
    return paths, "synthetic 30-s clips (no GTZAN folder found)"


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pool's workers, once shut down)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    """(result, wall seconds, CPU seconds of this process and the pool's workers). On a shared
    machine wall time depends on the others' load; CPU time much less so."""
    c0, t0 = _cpu_seconds(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    # extract_many returns without waiting for its workers' teardown; reap them (outside the wall
    # time) so their CPU time counts here and not in the next row.
    deadline = time.perf_counter() + 30
    while multiprocessing.active_children() and time.perf_counter() < deadline:
        time.sleep(0.01)
    return out, wall, _cpu_seconds() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="number of 30-s clips (default 20)")
    ap.add_argument("--quick", action="store_true", help="8 clips")
    ap.add_argument("--jobs", type=int, default=None, help="pool workers (default: all cores)")
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="batch sizes besides the whole set "
                    "(default 4 8)")
    args = ap.parse_args(argv)
    n = 8 if args.quick else args.n
    warnings.filterwarnings("ignore", category=UserWarning)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        paths, what = clip_paths(n, tmp)
        n = len(paths)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        jobs = args.jobs or cores
        print(f"clips: {n} x {what}; cores: {cores}; pool workers: {jobs}; librosa {features.librosa.__version__}; "
              f"FEATURE_VERSION {features.FEATURE_VERSION}")
        print("command: python benchmarks/bench_features.py " + " ".join(sys.argv[1:] if argv is None else argv))

        # One-time costs (numba JIT of the beat tracker, filter banks) excluded from both sides.
        t0 = time.perf_counter()
        y0 = features.load_audio(paths[0])[: 3 * features.SAMPLE_RATE]
        features.reference_features(y0)
        features.extract_features(y0)
        print(f"one-time warm-up: {time.perf_counter() - t0:.2f} s (excluded)")

        ref, t_ref, c_ref = _timed(lambda: np.stack([features.reference_features(features.load_audio(p)) for p in paths]))

        def run(batch, n_jobs, cache_dir=False):
            feats, total, cpu = [], 0.0, 0.0
            for start in range(0, n, batch):
                res, t, c = _timed(lambda: batch_features.extract_many(paths[start:start + batch], n_jobs=n_jobs,
                                                                    cache_dir=cache_dir, progress=False))
                assert not res.failures and len(res.ok) == len(paths[start:start + batch]), res.failures
                feats += res.features
                total += t
                cpu += c
            return np.concatenate(feats), (total, cpu)

        rows = [("reference, serial (per-call librosa)", (t_ref, c_ref))]
        single, t_single = run(n, 1)
        rows.append(("extract_many, 1 process", t_single))
        fast = single
        for batch in sorted(set(b for b in args.batches if 0 < b < n)) + [n]:
            pooled, t = run(batch, jobs)
            assert np.allclose(pooled, single, rtol=1e-6, atol=1e-6)
            rows.append((f"extract_many, {jobs} workers, batches of {batch}", t))
        cache = tmp / "cache"
        cold, t_cold = run(n, jobs, cache)
        warm, t_warm = run(n, jobs, cache)
        assert np.array_equal(cold, warm)
        rows.append((f"extract_many, {jobs} workers, cold cache", t_cold))
        rows.append((f"extract_many, {jobs} workers, warm cache", t_warm))

    # Agreement: 58 features to 1e-4 relative; harmonic ratio by correlation (see features.py)
    rel = np.abs(fast[:, :58] - ref[:, :58]) / np.maximum(np.abs(ref[:, :58]), 1e-8)
    worst = np.unravel_index(np.argmax(rel), rel.shape)
    hr_fast, hr_ref = fast[:, 58], ref[:, 58]
    r = float(np.corrcoef(hr_fast, hr_ref)[0, 1]) if n > 2 else float("nan")
    print(f"agreement: max relative difference over 58 features {rel.max():.2e} "
          f"({features.FEATURE_NAMES[worst[1]]}); harmonic ratio Pearson r = {r:.4f}, "
          f"mean |diff| = {np.abs(hr_fast - hr_ref).mean():.4f}")
    ok = rel.max() <= 1e-4 and (n <= 2 or r >= 0.98)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"timings, including file loading (load average {load:.1f} on {cores} cores at the end; wall ratio = "
          "reference wall / this wall; CPU = parent + pool workers):")
    for name, (seconds, cpu) in rows:
        print(f"  {name:44s} {seconds:8.2f} s  {1000 * seconds / n:8.1f} ms/clip  {t_ref / seconds:7.1f}x reference"
              f"   | CPU {1000 * cpu / n:8.1f} ms/clip  {c_ref / cpu:7.1f}x")
    print("agreement check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
