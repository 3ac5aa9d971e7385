"""End-to-end `python train.py` against plain per-call librosa feature extraction of the same clips.

    python benchmarks/bench_train.py                      # full: 900 clips both ways (several minutes)
    python benchmarks/bench_train.py --reference-sample 150   # reference timed on 150 of the 900 clips

Target (issue 3): the whole default training run (generation, features, training, evaluation,
figures) takes under a quarter of the time the seed's serial per-call librosa extraction alone
takes for the same 900 clips. Both are measured in this run, on this machine; the run uses a cold
feature cache (a fresh temporary cache folder), so nothing is reused from earlier runs.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features import SAMPLE_RATE, reference_features  # noqa: E402
from workbench.synth import generate_dataset  # noqa: E402


def time_train(out, cache):
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--out", str(out), "--cache-dir", str(cache)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def time_reference(sample, seed=0):
    clips, _ = generate_dataset(180, seed=seed)
    idx = np.random.default_rng(0).permutation(len(clips))[:sample]
    t = time.perf_counter()
    for i in idx:
        reference_features(clips[i], SAMPLE_RATE)
    per_clip = (time.perf_counter() - t) / len(idx)
    return per_clip, len(clips)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-sample", type=int, default=900,
                   help="clips the reference is timed on (its total is extrapolated to 900); default 900")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train_s = time_train(Path(tmp) / "run", Path(tmp) / "cache")
    per_clip, n = time_reference(args.reference_sample)
    ref_s = per_clip * n
    print(f"python train.py (default, cold cache), end to end: {train_s:8.1f} s")
    print(f"plain per-call librosa extraction, {n} clips:      {ref_s:8.1f} s "
          f"({per_clip * 1000:.0f} ms/clip, timed on {min(args.reference_sample, n)} clips)")
    print(f"ratio train / reference: {train_s / ref_s:.3f}  (target < 0.25)")


if __name__ == "__main__":
    main()
