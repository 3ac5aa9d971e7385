"""Ray's overhead on one machine: `classify.py --ray` (a local Ray) against the local worker pool,
on the same N 30-s songs (the songs and model of bench_classify.py; feature cache off).

Reported: the local pool's run; Ray's start (`ray.init`); the Ray run on the started Ray (actors
start, each loads the model once, chunks of paths); their sum; and songs per minute on this node.

Usage::

    python benchmarks/bench_ray.py              # 100 songs
    python benchmarks/bench_ray.py --n 200 --chunk-size 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import classify  # noqa: E402
from workbench import tagging  # noqa: E402
from bench_classify import benchmark_model, report, song_library, time_classify  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="songs (default 100)")
    ap.add_argument("--model", help="model (default: an untrained model; speed is the same)")
    ap.add_argument("--cpus", type=int, help="worker processes for both (default: every core)")
    ap.add_argument("--chunk-size", type=int, default=8, help="songs per Ray task (default 8)")
    ap.add_argument("--niceness", type=int, default=0, help="Ray worker niceness (default 0; Ray's own default is 15)")
    args = ap.parse_args(argv)
    # Ray starts its workers at niceness 15 (so that its own daemons stay responsive). On a machine
    # shared with other jobs that alone slows them against a pool at niceness 0; --niceness 0
    # (the default here) compares the two on equal terms. Set before ray.init: the raylet reads it.
    os.environ["RAY_worker_niceness"] = str(args.niceness)
    import ray

    from workbench import ray_backend

    cpus = args.cpus or tagging.available_cpus()
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        (tmp / "songs").mkdir()
        paths, label = song_library(args.n, tmp / "songs")
        model, spec = benchmark_model(paths, tmp, args.model)
        print(f"{args.n} songs: {label}; {cpus} CPUs; Ray {ray.__version__}, worker niceness {args.niceness}")
        model.predict_audio(paths[0])  # warm-up of this process (the pool forks from it)

        l_wall, l_cpu = time_classify(paths, spec, tmp / "local.csv", ["--n-jobs", str(cpus)])

        t0 = time.perf_counter()
        ray_backend.init_ray(num_cpus=cpus)
        init_s = time.perf_counter() - t0
        try:
            r_wall, _ = time_classify(paths, spec, tmp / "ray.csv", ["--ray", "--chunk-size", str(args.chunk_size)])
        finally:
            ray.shutdown()
        # Ray's workers are not children of this process: their CPU time is not in os.times.
        same = (tmp / "local.csv").read_text().count("\n") == (tmp / "ray.csv").read_text().count("\n")

    rows = [(f"local pool ({cpus} workers)", args.n, l_wall, l_cpu),
            (f"Ray, run on a started local Ray ({cpus} CPUs)", args.n, r_wall, float("nan")),
            ("Ray, including ray.init", args.n, r_wall + init_s, float("nan"))]
    report(rows)
    print(f"\nray.init: {init_s:.1f} s; Ray run / local run: {r_wall / l_wall:.2f}x the wall time "
          f"({(r_wall + init_s) / l_wall:.2f}x with ray.init); same number of rows: {same}")
    print(f"per-node throughput here: local {60 * args.n / l_wall:.0f} songs/min, Ray {60 * args.n / r_wall:.0f} songs/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
