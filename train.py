"""Train the music-genre Mixture-of-Experts and write a run folder (weights, metrics, figures).

Paste-ready:

    python train.py                                  # 900 synthetic clips (180 per genre), the seed's recipe
    python train.py --quick --out runs/quick         # a small, fast run (smoke tests, the notebook's quick mode)
    python train.py --data-dir ~/data/gtzan/genres --genres blues,classical,jazz,pop,rock --out runs/gtzan5
    python train.py --expert-type kan --out runs/kan # Kolmogorov-Arnold experts
    python train.py --num-experts-per-tok 2          # sparse top-2 gating
    python train.py --help                           # every setting, with its default

Every setting has one default, in `TrainSettings` (training) or `MusicGenreMoEConfig` (model and
loss); both are saved with the weights. Synthetic clips are split 120/30/30 per genre; recordings
from `--data-dir` are split by recording (stratified, seeded) and cut into `clip_seconds` windows,
so windows of one track never sit on both sides of a split.
"""

import sys

from workbench.runs import write_run
from workbench.settings import parse_settings


def main(argv=None, log=print):
    """Parse the flags, then train, evaluate and write the run folder (`workbench.runs.write_run`).

    Returns the metrics dict (also in the run's metrics.json).
    """
    return write_run(parse_settings(argv, description=__doc__), log=log)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, ValueError) as e:  # expected failures: one line, no traceback
        sys.exit(f"error: {e}")
