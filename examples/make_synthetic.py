"""Regenerate the bundled synthetic examples (deterministic): python examples/make_synthetic.py

synthetic-medley.ogg: 15 s each of jazz, rock and classical from synth.py, so the timeline and the
gate plot have something to show; synthetic-blues.ogg: 20 s of one genre.
"""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from workbench.synth import SAMPLE_RATE, generate_clip  # noqa: E402


def main():
    rng = np.random.default_rng(2024)
    medley = np.concatenate([generate_clip(g, rng, SAMPLE_RATE, duration=15.0) for g in ("jazz", "rock", "classical")])
    blues = generate_clip("blues", rng, SAMPLE_RATE, duration=20.0)
    for name, y in (("synthetic-medley.ogg", medley), ("synthetic-blues.ogg", blues)):
        sf.write(HERE / name, np.clip(y, -1, 1), SAMPLE_RATE, format="OGG", subtype="VORBIS")
        print(HERE / name, f"{len(y) / SAMPLE_RATE:.1f} s")


if __name__ == "__main__":
    main()
