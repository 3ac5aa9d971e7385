"""CPU cost of the musicnn front end per 30-s song, on one thread.

For each 30-s clip (GTZAN clips from ../shared/data/gtzan-mini-dev at 22,050 Hz when present,
else synthetic clips from ``synth``) the script times, with ``torch.set_num_threads(1)`` and the
BLAS/OpenMP pools limited to one thread:

* resampling 22,050 -> 16,000 Hz (``features.resample_audio``, soxr_hq),
* the log-mel patches (``frontend.log_mel_patches``: 10 patches of 187 x 96 per 30 s),
* the network on those patches (``MusiCNN.embed``, ``frontend.patches_per_pass()`` patches per pass),
* and ``frontend.window_embedding`` on the whole 30-s window (all of the above together),

the network and the whole window once per precision of ``--precision`` (default fp32, the exact
network, and auto, what ``frontend.resolve_precision`` picks on this CPU), interleaved per clip.

Decoding the file is not included (the whole-path benchmark owns that). Figures are process CPU
seconds (what one core spends, insensitive to other load on the machine) with wall-clock seconds
beside them; the median over clips is reported after one warm-up clip.

Usage::

    python benchmarks/bench_frontend.py            # 10 clips
    python benchmarks/bench_frontend.py --n 3 --precision fp32,bf16,int8
"""

from __future__ import annotations

import os

# One thread everywhere, set before numpy/torch start their pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
import frontend  # noqa: E402
from workbench import synth  # noqa: E402

GTZAN = ROOT.parent / "shared" / "data" / "gtzan-mini-dev"
SECONDS = 30.0


def clips(n: int):
    """``n`` mono 30-s clips at 22,050 Hz and a description of where they came from."""
    if GTZAN.is_dir():
        by_genre = [sorted(d.glob("*.wav")) for d in sorted(GTZAN.iterdir()) if d.is_dir()]
        paths = [f for group in zip(*by_genre) for f in group][:n]
        if paths:
            n_samples = int(SECONDS * features.SAMPLE_RATE)
            return [features.load_audio(p)[:n_samples] for p in paths], "GTZAN mini-dev clips"
    genres = list(synth.GENRE_GENERATORS)
    return ([synth.generate_clip(genres[i % len(genres)], np.random.default_rng(i), duration=SECONDS)
             for i in range(n)], "synthetic clips (no GTZAN folder found)")


def timed(fn, *args):
    """(result, CPU seconds, wall seconds) of ``fn(*args)``."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


def embed_in_passes(net, patches: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The network as window_embeddings runs it: patches_per_pass() patches per forward pass."""
    step = frontend.patches_per_pass(precision)
    return torch.cat([net.embed(patches[i:i + step], precision) for i in range(0, len(patches), step)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10, help="number of 30-s clips (default 10)")
    ap.add_argument("--precision", default="fp32,auto", help="front-end precisions, comma-separated "
                                                              "(default fp32,auto)")
    args = ap.parse_args(argv)
    precisions = args.precision.split(",")
    torch.set_num_threads(1)
    net = frontend.load_musicnn()
    audio, what = clips(args.n + 1)
    sr = features.SAMPLE_RATE
    print(f"{len(audio) - 1} x {what} ({SECONDS:.0f} s at {sr} Hz); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread; auto precision = {frontend.resolve_precision('auto')}")

    rows = []
    for i, y in enumerate(audio):
        y16, c_rs, w_rs = timed(features.resample_audio, y, sr, frontend.MUSICNN_SAMPLE_RATE)
        patches, c_mel, w_mel = timed(frontend.log_mel_patches, y16)
        row = [c_rs, c_mel, w_rs, w_mel, len(patches)]
        for p in precisions:
            with torch.inference_mode():
                _, c_net, w_net = timed(embed_in_passes, net, torch.from_numpy(patches), p)
            _, c_all, w_all = timed(frontend.window_embedding, net, y, sr, p)
            row += [c_net, w_net, c_all, w_all]
        if i > 0:  # the first clip warms up allocators and one-time set-up
            rows.append(row)
    r = np.median(np.array(rows, dtype=float), axis=0)
    print(f"median per 30-s song ({int(r[4])} patches), CPU s / wall s:")
    lines = [("resample 22,050 -> 16,000 Hz", r[0], r[2]), ("log-mel patches", r[1], r[3])]
    for j, p in enumerate(precisions):
        c_net, w_net, c_all, w_all = r[5 + 4 * j: 9 + 4 * j]
        lines += [(f"musicnn network ({p})", c_net, w_net), (f"window_embedding ({p}, all three)", c_all, w_all)]
    for name, c, w in lines:
        print(f"  {name:36s} {c:7.3f} CPU s  {w:7.3f} wall s")
    for j, p in enumerate(precisions):
        c_net = r[5 + 4 * j]
        print(f"network per patch, {p}: {1000 * c_net / r[4]:.1f} CPU ms ({frontend.patches_per_pass(p)} patches "
              f"per pass); {r[5] / c_net:.2f}x the speed of {precisions[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
