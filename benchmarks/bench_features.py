"""Feature extraction speed: plain per-call librosa (the seed's way) vs. ``extract_many``.

Both run on the same 30-s clips: the GTZAN clips in ../shared/data/gtzan-mini-dev when present,
else synthetic 30-s clips written to a temporary folder. The reference is serial
(``load_audio`` + :func:`features.reference_features` per file, as the seed notebook did);
``extract_many`` runs with default settings (all cores) on a cold cache, then again on the warm
cache, and once with the cache disabled. The script checks the two agree and prints per-clip
milliseconds and the throughput ratio.

Usage::

    python benchmarks/bench_features.py            # all clips (50 GTZAN clips: ~2 min)
    python benchmarks/bench_features.py --quick    # 8 clips
    python benchmarks/bench_features.py --n 20 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import batch_features  # noqa: E402
import features  # noqa: E402
import synth  # noqa: E402

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="number of 30-s clips (default 50)")
    ap.add_argument("--quick", action="store_true", help="8 clips")
    ap.add_argument("--jobs", type=int, default=None, help="extract_many workers (default: all cores)")
    args = ap.parse_args(argv)
    n = 8 if args.quick else args.n
    warnings.filterwarnings("ignore", category=UserWarning)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        paths, what = clip_paths(n, tmp)
        n = len(paths)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"clips: {n} x {what}; cores: {cores}; librosa {features.librosa.__version__}")

        # Warm-up of the reference's one-time costs (numba JIT of the beat tracker etc.), reported
        # separately so the per-clip figure is the steady state the seed notebook ran at.
        t0 = time.perf_counter()
        features.reference_features(features.load_audio(paths[0])[: 3 * features.SAMPLE_RATE])
        print(f"reference one-time warm-up: {time.perf_counter() - t0:.2f} s (excluded)")

        t0 = time.perf_counter()
        ref = np.stack([features.reference_features(features.load_audio(p)) for p in paths])
        t_ref = time.perf_counter() - t0

        cache = tmp / "cache"
        t0 = time.perf_counter()
        cold = batch_features.extract_many(paths, n_jobs=args.jobs, cache_dir=cache, progress=False)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = batch_features.extract_many(paths, n_jobs=args.jobs, cache_dir=cache, progress=False)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        nocache = batch_features.extract_many(paths, n_jobs=args.jobs, cache_dir=False, progress=False)
        t_nocache = time.perf_counter() - t0

    assert not cold.failures and len(cold.ok) == n, cold.failures
    fast = np.concatenate(cold.features)
    assert np.array_equal(fast, np.concatenate(warm.features)) and warm.cache_hits == n
    assert np.allclose(fast, np.concatenate(nocache.features), rtol=1e-6, atol=1e-6)

    # Agreement: 58 features to 1e-4 relative; harmonic ratio by correlation (see features.py)
    rel = np.abs(fast[:, :58] - ref[:, :58]) / np.maximum(np.abs(ref[:, :58]), 1e-8)
    worst = np.unravel_index(np.argmax(rel), rel.shape)
    hr_fast, hr_ref = fast[:, 58], ref[:, 58]
    r = float(np.corrcoef(hr_fast, hr_ref)[0, 1]) if n > 2 else float("nan")
    print(f"agreement: max relative difference over 58 features {rel.max():.2e} "
          f"({features.FEATURE_NAMES[worst[1]]}); harmonic ratio Pearson r = {r:.4f}, "
          f"mean |diff| = {np.abs(hr_fast - hr_ref).mean():.4f}")
    ok = rel.max() <= 1e-4 and (n <= 2 or r >= 0.98)

    def line(name, seconds):
        print(f"  {name:38s} {seconds:8.2f} s  {1000 * seconds / n:8.1f} ms/clip  "
              f"{t_ref / seconds:7.1f}x reference throughput")

    print("timings (wall clock, whole batch, including file loading):")
    line("reference, serial (per-call librosa)", t_ref)
    line("extract_many, cold cache", t_cold)
    line("extract_many, cache disabled", t_nocache)
    line("extract_many, warm cache", t_warm)
    print("agreement check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
