"""Artist groups and artist-grouped folds for the real-music benchmarks.

    recordings = load_recordings(DATA)              # GTZAN dev (350) + emotify-dev (80), with artists
    groups = artist_groups(recordings)              # one key per artist; a blank artist is its own group
    for train_idx, test_idx in artist_kfold(labels, groups, k=5, seed=0): ...

GTZAN's dev files are ordered by artist in blocks (blues 0-11 John Lee Hooker, reggae 0-27 Bob Marley,
...), so a split by recording tests artists the training heard; every split here is by artist.
Artists come from ``gtzan-artists.csv`` (Sturm's index; ``file`` relative to the data folder) and
``emotify-dev/artists.csv`` (``file`` relative to ``emotify-dev``; ID3 artist). The key is the artist
name, lower-cased and stripped, without a collection prefix, so an artist who appeared in both
collections would be one group; a blank artist becomes ``"<blank>:<file>"``, a group of its own.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GTZAN_DIRS = ("gtzan-mini-dev", "gtzan-short-dev")
EMOTIFY_DIR = "emotify-dev"


class Recording(NamedTuple):
    path: Path  #: absolute path of the audio file
    rel: str  #: path relative to the data folder (the cache key)
    collection: str  #: "gtzan" or "emotify"
    genre: str
    artist: str  #: as the index spells it ("" when unknown)


def group_key(artist: str, rel: str) -> str:
    """The artist group of one recording: the artist's name, normalised; a blank artist is its own group."""
    a = " ".join((artist or "").split()).lower()
    return a if a else f"<blank>:{rel}"


def load_recordings(data: Path = DATA, gtzan_dirs: Sequence[str] = GTZAN_DIRS,
                    emotify: bool = True) -> List[Recording]:
    """Every dev recording: GTZAN files on disk (sorted; artist from the index), then emotify-dev in its index order."""
    data = Path(data)
    index = {}
    with open(data / "gtzan-artists.csv", newline="") as f:
        for row in csv.DictReader(f):
            index[row["file"]] = (row["genre"], row["artist"].strip())
    out = []
    for d in gtzan_dirs:  # what is on disk; the index gives the artist ("" = unknown: its own group)
        for path in sorted((data / d).glob("*/*.wav")):
            rel = path.relative_to(data).as_posix()
            genre, artist = index.get(rel, (path.parent.name, ""))
            out.append(Recording(path, rel, "gtzan", genre, artist))
    unindexed = [r.rel for r in out if r.rel not in index]
    if unindexed:
        warnings.warn(f"{len(unindexed)} GTZAN files not in gtzan-artists.csv (blank artist, own group): {unindexed}")
    if emotify:
        with open(data / EMOTIFY_DIR / "artists.csv", newline="") as f:
            for row in csv.DictReader(f):
                rel = f"{EMOTIFY_DIR}/{row['file']}"
                out.append(Recording(data / rel, rel, "emotify", row["genre"], row["artist"].strip()))
    missing = [r.rel for r in out if not r.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} indexed recordings are missing, e.g. {missing[:3]}")
    return out


def artist_groups(recordings: Sequence[Recording]) -> np.ndarray:
    """(n,) array of group keys (str), one per recording."""
    return np.array([group_key(r.artist, r.rel) for r in recordings], dtype=object)


def artist_kfold(labels: Sequence, groups: Sequence, k: int = 5, seed: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold over recordings (sklearn's StratifiedGroupKFold, shuffled with `seed`).

    No artist group is on both sides of a split; each fold's genre mix is kept close to the whole's.
    Yields (train_idx, test_idx) index arrays into `labels`.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    groups = np.asarray(groups)
    _, codes = np.unique(groups, return_inverse=True)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in cv.split(np.zeros(len(labels)), labels, codes):
        assert not set(codes[tr]) & set(codes[te]), "an artist group on both sides of a split"
        yield tr, te


def artist_weights(labels: Sequence, groups: Sequence) -> np.ndarray:
    """Per-recording weights so each artist counts equally within its genre (weights of a genre sum to
    its recording count, so genres keep their share): w = n_genre / (n_artists_in_genre * n_recs_of_artist_in_genre)."""
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    w = np.zeros(len(labels))
    for g in np.unique(labels):
        m = labels == g
        arts, counts = np.unique(groups[m], return_counts=True)
        per = dict(zip(arts, counts))
        w[m] = [m.sum() / (len(arts) * per[a]) for a in groups[m]]
    return w


def wilson(k: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95% Wilson score interval of k successes in n (`workbench.evaluation.wilson_interval`)."""
    from workbench.evaluation import wilson_interval

    return wilson_interval(k, n, z)


if __name__ == "__main__":  # a summary of the groups and one seed's folds
    recs = load_recordings()
    groups = artist_groups(recs)
    labels = np.array([f"{r.collection}:{r.genre}" for r in recs])
    print(f"{len(recs)} recordings, {len(set(groups))} artist groups")
    for i, (tr, te) in enumerate(artist_kfold(labels, groups, k=5, seed=0)):
        print(f"fold {i}: train {len(tr)}  test {len(te)}  test groups {len(set(groups[te]))}")
