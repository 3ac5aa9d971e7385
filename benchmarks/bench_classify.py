"""Tagging speed: `classify.py` (worker pool + batched inference) against `model.predict_audio`
called song by song, on the same N 30-s songs in the same run.

Songs: the 50 GTZAN mini-dev clips (../shared/data/gtzan-mini-dev) cycled to N through symlinks
with distinct names (classify counts each as a song), else synthetic 30-s WAVs. The feature cache
is off for both, so every song is decoded and analysed. CPU seconds include the worker
processes (os.times children). The model's weights do not change the cost: without --model an
untrained model with the right feature statistics is used.

Usage::

    python benchmarks/bench_classify.py                 # 200 songs (a few minutes on 2 cores)
    python benchmarks/bench_classify.py --n 40          # quicker
    python benchmarks/bench_classify.py --model runs/latest --n-jobs 2
    python benchmarks/bench_classify.py --baseline-sample 50   # predict_audio timed on 50 of the songs
    python benchmarks/bench_classify.py --frontend musicnn --n 100 --precisions fp32,auto --baseline-sample 10
                                                        # a musicnn model: classify.py with the fp32 front end
                                                        # (the reference) and with 'auto' (int8 here), same songs
    python benchmarks/bench_classify.py --frontend musicnn --n 200 --precisions auto --devices cpu,cuda
                                                        # where CUDA is present: classify.py --device cuda beside
                                                        # the CPU path (the first device the reference)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import classify  # noqa: E402
from workbench import tagging  # noqa: E402
from features import SAMPLE_RATE  # noqa: E402

GTZAN = ROOT.parent / "shared" / "data" / "gtzan-mini-dev"


def song_library(n: int, folder: Path):
    """`n` distinct paths in `folder` (symlinks to GTZAN clips, cycled; else synthetic WAVs)."""
    sources = sorted(GTZAN.rglob("*.wav")) if GTZAN.is_dir() else []
    label = "GTZAN mini-dev 30-s WAVs (50 clips cycled)"
    if not sources:
        import soundfile as sf

        from workbench.synth import GENRE_GENERATORS, generate_clip

        genres = list(GENRE_GENERATORS)
        for i in range(min(n, 50)):
            p = folder / f"synthetic_{i:03d}.wav"
            sf.write(p, generate_clip(genres[i % len(genres)], np.random.default_rng(i), duration=30.0), SAMPLE_RATE)
            sources.append(p)
        label = "synthetic 30-s WAVs (no GTZAN folder found)"
    paths = []
    for i, src in zip(range(n), itertools.cycle(sources)):
        link = folder / f"song_{i:05d}{src.suffix}"
        if src.parent != folder:
            os.symlink(src, link)
        else:
            link = src
        paths.append(str(link))
    return paths, label


def benchmark_model(paths, folder: Path, model_spec=None, frontend="none"):
    """(model, spec for classify): the given model, or an untrained one with stats from 5 songs
    (with the musicnn front end, its pretrained weights: the cost of a model trained on recordings)."""
    if model_spec:
        return classify.load_model(model_spec), model_spec
    import torch

    from workbench.batch import extract_many
    from configuration import MusicGenreMoEConfig
    from modeling import MusicGenreMoE

    feats = np.concatenate(extract_many(paths[:5], clip_seconds=6.0 if frontend != "none" else 5.0, n_jobs=1,
                                        cache_dir=False, frontend=frontend).features)
    genres = ["jazz", "blues", "rock", "pop", "classical"]
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)},
                                 feature_mean=[float(v) for v in feats.mean(0)],
                                 feature_std=[float(v) for v in feats.std(0) + 1e-3], frontend=frontend,
                                 clip_seconds=6.0 if frontend != "none" else 5.0)
    out = folder / "model"
    model = MusicGenreMoE(config)
    if frontend != "none":
        model.load_pretrained_frontend()
    model.save_pretrained(out)
    return classify.load_model(str(out)), str(out)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_predict_audio(model, paths):
    c0, t0 = cpu_seconds(), time.perf_counter()
    for p in paths:
        model.predict_audio(p)
    return time.perf_counter() - t0, cpu_seconds() - c0


def time_classify(paths, model_spec, out: Path, extra=()):
    c0, t0 = cpu_seconds(), time.perf_counter()
    code = classify.main([*paths, "--model", model_spec, "--out", str(out), "--overwrite", "--no-progress", *extra])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if code != 0:
        raise SystemExit(f"classify.py exited with {code}")
    return wall, cpu


def report(rows):
    print(f"\n{'method':<44} {'songs':>6} {'wall s':>8} {'songs/min':>10} {'CPU s/song':>11}")
    for name, songs, wall, cpu in rows:
        print(f"{name:<44} {songs:>6} {wall:>8.1f} {60 * songs / wall:>10.1f} {cpu / songs:>11.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="songs (default 200)")
    ap.add_argument("--model", help="model for classify.py --model (default: an untrained model; speed is the same)")
    ap.add_argument("--n-jobs", type=int, help="classify.py --n-jobs (default: every core)")
    ap.add_argument("--frontend", choices=("none", "musicnn"), default="none",
                    help="the untrained model's front end (default none; musicnn: a model trained on recordings)")
    ap.add_argument("--precisions", default="",
                    help="comma-separated --frontend-precision values to time classify.py with, the first the "
                         "reference (e.g. fp32,auto); default: the model's own")
    ap.add_argument("--devices", default="cpu",
                    help="comma-separated classify.py --device values, the first the reference (e.g. cpu,cuda)")
    ap.add_argument("--baseline-sample", type=int,
                    help="time predict_audio on this many of the songs and scale to N (default: all N)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n {args.n}: expected 1 or more")
    with tempfile.TemporaryDirectory(prefix="bench_classify_") as tmp:
        tmp = Path(tmp)
        (tmp / "songs").mkdir()
        paths, label = song_library(args.n, tmp / "songs")
        model, spec = benchmark_model(paths, tmp, args.model, args.frontend)
        print(f"{args.n} songs: {label}; {tagging.available_cpus()} CPUs; model {args.model or 'untrained (same cost)'}")
        model.predict_audio(paths[0])  # warm-up: lazy imports and filter banks, for both methods

        base = paths[: args.baseline_sample] if args.baseline_sample else paths
        b_wall, b_cpu = time_predict_audio(model, base)
        # The same calls with one torch thread: on a busy machine torch's default intra-op threads
        # spend more time waiting for each other than computing on a few windows.
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        b1_wall, b1_cpu = time_predict_audio(model, base)
        torch.set_num_threads(threads)
        extra = ["--n-jobs", str(args.n_jobs)] if args.n_jobs else []
        precisions = [v for v in args.precisions.split(",") if v] or [None]
        devices = [v for v in args.devices.split(",") if v] or ["cpu"]
        variants = [(d, p) for d in devices for p in precisions]
        timed = {}
        for device, prec in variants:
            flag = ["--device", device] + (["--frontend-precision", prec] if prec else [])
            timed[device, prec] = time_classify(paths, spec, tmp / f"predictions-{device}-{prec}.csv", extra + flag)
        c_wall, c_cpu = timed[variants[-1]]

    rows = [(f"model.predict_audio, song by song ({len(base)} timed)", len(base), b_wall, b_cpu),
            ("  the same, torch.set_num_threads(1)", len(base), b1_wall, b1_cpu)]
    rows += [(f"classify.py (pool of {args.n_jobs or tagging.available_cpus()}, batched)"
              + (f", {device}" if len(devices) > 1 or device != "cpu" else "")
              + (f", front end {prec}" if prec else ""), args.n, w, c) for (device, prec), (w, c) in timed.items()]
    report(rows)
    ref_wall = timed[variants[0]][0]
    for device, prec in variants[1:]:
        print(f"classify.py --device {device}" + (f" with the front end in {prec}" if prec else "")
              + f": {ref_wall / timed[device, prec][0]:.2f}x the songs per minute of the first "
              f"({variants[0][0]}, {variants[0][1] or 'model default'}) on the same {args.n} songs")
    speed = (args.n / c_wall) / (len(base) / b_wall)
    cpu = (c_cpu / args.n) / (b_cpu / len(base))
    print(f"\nclassify.py: {speed:.2f}x the songs per minute of predict_audio song by song; "
          f"{cpu:.2f}x its CPU seconds per song")
    print(f"against predict_audio with one torch thread: {(args.n / c_wall) / (len(base) / b1_wall):.2f}x the songs "
          f"per minute, {(c_cpu / args.n) / (b1_cpu / len(base)):.2f}x the CPU seconds per song")
    return 0


if __name__ == "__main__":
    sys.exit(main())
