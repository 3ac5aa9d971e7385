"""Who made each recording: artist groups for splits by artist and for artist-weighted centroids.

GTZAN comes in blocks by artist, and most libraries hold several songs per artist: a split by
recording then tests artists the training heard, and one prolific artist can define a genre. An
artist index is a CSV with `file` and `artist` columns (`file` relative to the CSV's folder), as
`gtzan-artists.csv` and `emotify-dev/artists.csv` are. A recording the index does not know, or
whose artist is blank, is a group of its own.
"""

import csv
from pathlib import Path

import numpy as np


def load_artist_index(paths):
    """{resolved recording path: artist} from one or more artist CSVs; a bad file is a ValueError naming it."""
    index = {}
    for csv_path in [paths] if isinstance(paths, (str, Path)) else (paths or []):
        csv_path = Path(csv_path).expanduser()
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"--artists {csv_path}: cannot read it ({type(e).__name__}: {e})") from None
        if rows and not {"file", "artist"} <= set(rows[0]):
            raise ValueError(f"--artists {csv_path}: expected columns file and artist, got {sorted(rows[0])}")
        for row in rows:
            index[(csv_path.parent / row["file"]).resolve()] = (row["artist"] or "").strip()
    return index


def artist_key(artist, recording):
    """One recording's group: the artist's name, case and spacing folded; a blank artist is its own group."""
    name = " ".join((artist or "").split()).lower()
    return name if name else f"<unknown>:{recording}"


def track_groups(track_names, index):
    """(n_tracks,) artist group of every track (its path in `track_names`), from `load_artist_index`."""
    return np.array([artist_key(index.get(Path(str(n)).expanduser().resolve(), ""), n) for n in track_names],
                    dtype=object)
