"""The data a run trains on: labelled recordings in folders, or synthetic clips, as window rows.

Recordings are split by recording (stratified, seeded), never by window: windows of one track
never sit on both sides of a split.
"""

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decoding import AUDIO_EXTENSIONS
from features import N_FEATURES, SAMPLE_RATE, AudioError, load_audio
from workbench.artists import load_artist_index, track_groups
from workbench.batch import content_hash, extract_many
from workbench.settings import LAYOUT, SettingsError


def min_tracks_per_genre(split):
    """Recordings (synthetic: clips) a genre needs so that every part of the split gets one."""
    return sum(1 for v in split.split(",") if float(v) > 0)


def check_genres(genres, counts, s, what):
    """At least two genres, and enough recordings in each for the split (checked before extraction)."""
    if len(genres) < 2:
        raise SettingsError(f"{what}: found {len(genres)} genre ({', '.join(genres) or 'none'}); a classifier "
                            f"needs at least 2 genres")
    need = min_tracks_per_genre(s.split)
    short = {g: n for g, n in zip(genres, counts) if n < need}
    if short:
        listed = ", ".join(f"{g} has {n}" for g, n in short.items())
        raise SettingsError(f"{what}: {listed}; the train/val/test split --split {s.split} needs at least {need} "
                            f"recordings per genre (one in each part)")


# -- data -------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Feature rows with their genre and the recording (track) they came from."""

    features: np.ndarray   # (n_rows, 59) raw features
    labels: np.ndarray     # (n_rows,) genre index
    tracks: np.ndarray     # (n_rows,) track index; a synthetic clip is its own track
    track_names: list      # track index -> file path or "synthetic:<genre>:<i>"
    genres: list
    source: str            # "synthetic" or the data folder
    skipped: list          # (file, reason) for recordings that could not be read
    examples: dict         # genre -> one waveform, for the spectrogram figure


def load_dataset(s):
    """Check the data the flags name (before any extraction), then extract its features."""
    genres, paths, labels = list_data(s)
    if s.data_dir is None and not s.dataset:
        return load_synthetic(s, genres)
    return load_folder(s, (paths, labels, genres))


def list_data(s):
    """(genres, paths, labels) of the run's data, refused up front when it cannot make a run.

    Synthetic data has no paths (None); its counts come from --n-per-genre. A --dataset's "paths"
    are its rows as extraction sources (`workbench.hf_data.DatasetSources`, decoded lazily).
    """
    if s.dataset:
        return list_hf_dataset(s)
    if any(getattr(s, f) is not None for f in ("audio_column", "label_column", "dataset_split")):
        raise SettingsError("--audio-column, --label-column and --dataset-split: only used with --dataset")
    if s.data_dir is None:
        from workbench.synth import GENRE_GENERATORS

        genres = _pick_genres(list(GENRE_GENERATORS), s.genres)
        check_genres(genres, [s.n_per_genre] * len(genres), s, "--n-per-genre")
        return genres, None, None
    if s.labels == "tags":
        paths, labels, genres = list_tagged_recordings(s.data_dir, s.genres, min_tracks_per_genre(s.split))
    else:
        paths, labels, genres = list_recordings(s.data_dir, s.genres)
    check_genres(genres, np.bincount(labels, minlength=len(genres)).tolist(), s, f"--data-dir {', '.join(s.data_dir)}")
    return genres, paths, labels


def list_hf_dataset(s):
    """(genres, sources, labels) of a --dataset: its labelled rows, genres as --genres chooses."""
    from workbench.hf_data import DatasetError, DatasetSources, load_audio_dataset

    if s.data_dir is not None or s.labels == "tags" or s.ray is not None:
        raise SettingsError(f"--dataset {s.dataset}: not with {'--data-dir' if s.data_dir else '--labels tags' if s.labels == 'tags' else '--ray'}")
    try:
        loaded = load_audio_dataset(s.dataset, split=s.dataset_split, audio_column=s.audio_column,
                                    label_column=s.label_column)
    except DatasetError as exc:
        raise SettingsError(str(exc)) from None
    sources = DatasetSources(loaded, SAMPLE_RATE)
    genres = _pick_genres(sorted(set(sources.labels)), s.genres)
    if s.genres:  # only the chosen genres' rows
        keep = [k for k, g in enumerate(sources.labels) if g in genres]
        sources.index, sources.names = [sources.index[k] for k in keep], [sources.names[k] for k in keep]
        sources.labels = [sources.labels[k] for k in keep]
    labels = np.asarray([genres.index(g) for g in sources.labels])
    check_genres(genres, np.bincount(labels, minlength=len(genres)).tolist(), s, f"--dataset {s.dataset}")
    return genres, sources, labels


def list_tagged_recordings(data_dirs, genres=None, min_songs=1):
    """(paths, genre indices, genres) of every audio file under the folders (any layout), labelled
    by its own genre tag (`workbench.tags.labels_from_tags`); untagged files are listed on stderr."""
    import sys

    from workbench.tags import TagError, labels_from_tags

    roots = [Path(d).expanduser() for d in data_dirs]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"--data-dir {root} {'does not exist' if not root.exists() else 'is not a folder'}")
    files = [f for root in roots for f in _audio_files(root)]
    wanted = [g for g in genres.split(",") if g.strip()] if genres else None
    try:
        tagged = labels_from_tags(files, genres=wanted, min_songs=min_songs)
    except TagError as exc:
        raise SettingsError(f"--data-dir {', '.join(map(str, roots))} --labels tags: {exc}") from None
    if tagged.skipped:
        print(f"--labels tags: {len(tagged.skipped)} of {len(files)} recordings skipped (no usable genre tag):",
              file=sys.stderr)
        for _, reason in tagged.skipped:
            print(f"  {reason}", file=sys.stderr)
    names = list(tagged.counts)
    return [Path(p) for p in tagged.paths], np.asarray([names.index(g) for g in tagged.labels]), names


def load_synthetic(s, genres=None):
    from workbench.synth import GENRE_GENERATORS, generate_dataset

    genres = genres or _pick_genres(list(GENRE_GENERATORS), s.genres)
    clips, labels = generate_dataset(s.n_per_genre, seed=s.seed, genres=genres, sr=SAMPLE_RATE)
    # One row per synthetic clip (each is about one window long), as the seed did.
    result = extract_many(clips, sr=SAMPLE_RATE, n_jobs=s.n_jobs, cache_dir=_cache(s), frontend=s.model["frontend"])
    if result.failures:
        raise RuntimeError(f"synthetic clips failed feature extraction: {result.failures[:3]}")
    feats = np.concatenate(result.features).astype(np.float32)
    labels = np.asarray(labels)[result.ok]
    examples = {g: clips[int(np.flatnonzero(np.asarray(labels) == i)[0])] for i, g in enumerate(genres)}
    names = [f"synthetic:{genres[l]}:{i}" for i, l in enumerate(labels)]
    return Dataset(feats, labels, np.arange(len(labels)), names, genres, "synthetic", [], examples)


def _audio_files(folder):
    # Regular files only, and no hidden ones (macOS "._x.wav" resource forks are not audio).
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS
                  and f.is_file() and not f.name.startswith("."))


def _genre_folders(root):
    """A data folder's genre sub-folder names, or a SettingsError saying what is wrong with it."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise FileNotFoundError(f"--data-dir {root} {what}; expected layout {LAYOUT}")
    available = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not available:
        loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS]
        found = f"holds {len(loose)} audio files but no genre sub-folders" if loose else "has no genre sub-folders"
        raise SettingsError(f"--data-dir {root} {found}; expected layout {LAYOUT}")
    return available


def list_recordings(data_dirs, genres=None):
    """(paths, genre indices, genres) for one or more folders holding one sub-folder of recordings per genre.

    Several folders merge by genre name: `rock/` of every folder is one genre.
    """
    roots = [Path(d).expanduser() for d in ([data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else data_dirs)]
    folders = {root: _genre_folders(root) for root in roots}
    genres = _pick_genres(sorted(set().union(*folders.values())), genres)
    paths, labels = [], []
    for i, g in enumerate(genres):
        files = [f for root in roots if g in folders[root] for f in _audio_files(root / g)]
        if not files:
            raise SettingsError(f"--data-dir {', '.join(map(str, roots))}: sub-folder {g}/ holds no audio files "
                                f"({', '.join(AUDIO_EXTENSIONS)}); expected layout {LAYOUT}")
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels), genres


def window_rows(result, labels):
    """An extraction's windows as rows, one track per readable recording (numbered in `result.ok` order).

    `labels` holds the genre index of every source given to `extract_many`. Returns (features
    (n_windows, width) float32, genre index per row, track index per row).
    """
    counts = [len(f) for f in result.features]
    rows_label = np.repeat(np.asarray(labels)[np.asarray(result.ok, dtype=int)], counts)
    return np.concatenate(result.features).astype(np.float32), rows_label, np.repeat(np.arange(len(counts)), counts)


def data_roots(data):
    """The data folders a Dataset of recordings came from (its `source`, os.pathsep-joined)."""
    return [Path(p) for p in data.source.split(os.pathsep)]


def duplicate_recordings(paths, labels, genres):
    """[(first path, its genre), (copy, its genre)] for every recording whose bytes (blake2b content
    hash) another one already has. Empty and unreadable files are left to the extraction's errors."""
    seen, pairs = {}, []
    for path, label in zip(paths, labels):
        try:
            if os.path.getsize(path) == 0:
                continue
            key = content_hash(str(path))
        except (OSError, AudioError):
            continue
        if key in seen:
            pairs.append((seen[key], (path, genres[label])))
        else:
            seen[key] = (path, genres[label])
    return pairs


def check_duplicates(paths, labels, genres, s, what, shown=3):
    """Refuse (SettingsError) the same audio in two genre folders or twice in one, or with
    --allow-duplicates print a warning; the line names the first few pairs and counts the rest."""
    pairs = duplicate_recordings(paths, labels, genres)
    if not pairs:
        return
    across = sum(a[1] != b[1] for a, b in pairs)
    listed = "; ".join(f"{a} ({ga}) = {b} ({gb})" for (a, ga), (b, gb) in pairs[:shown])
    line = (f"{what}: {len(pairs)} recording(s) are the same audio as another ({across} in two genres, "
            f"{len(pairs) - across} twice in one): {listed}" + (f"; and {len(pairs) - shown} more" if len(pairs) > shown else ""))
    if not getattr(s, "allow_duplicates", False):
        raise SettingsError(f"{line}; a copy on both sides of the split inflates the test score: remove the copies "
                            f"or pass --allow-duplicates")
    print(f"warning: {line} (--allow-duplicates: training on them)", file=sys.stderr)


def describe_failures(failures, shown=3):
    """Unreadable recordings in a few words: the count, the count per reason (the commonest
    few) and the first few paths with their reason, e.g. for 10,000 empty files."""
    reasons = [(str(path), str(msg)[len(f"{path}: "):] if str(msg).startswith(f"{path}: ") else str(msg))
               for path, msg in failures]
    counts = Counter(r for _, r in reasons)
    kinds = ", ".join(f"{n} {r}" for r, n in counts.most_common(shown))
    kinds += f", {len(counts) - shown} other reasons" if len(counts) > shown else ""
    first = "; ".join(f"{p} ({r})" for p, r in reasons[:shown])
    return f"{len(reasons)} unreadable ({kinds}): {first}" + (", ..." if len(reasons) > shown else "")


def load_folder(s, listed=None):
    paths, labels, genres = listed or list_recordings(s.data_dir, s.genres)
    what = f"--dataset {s.dataset}" if s.dataset else f"--data-dir {', '.join(s.data_dir)}"
    if not s.dataset:
        check_duplicates(paths, labels, genres, s, what)
    clip_seconds = s.model["clip_seconds"]
    if s.ray is None:
        result = extract_many(paths, sr=SAMPLE_RATE, clip_seconds=clip_seconds, n_jobs=s.n_jobs, cache_dir=_cache(s),
                              frontend=s.model["frontend"])
    else:  # the same result, computed by Ray workers (one machine or a cluster)
        from workbench.ray_backend import extract_many_ray

        result = extract_many_ray(paths, sr=SAMPLE_RATE, clip_seconds=clip_seconds, cache_dir=_cache(s),
                                  address=None if s.ray == "local" else s.ray, frontend=s.model["frontend"])
    # Unreadable files drop out: the split must still find enough readable recordings per genre.
    readable = np.bincount(labels[np.asarray(result.ok, dtype=int)], minlength=len(genres)).tolist()
    try:
        check_genres(genres, readable, s, f"{what} (readable recordings)")
    except SettingsError as e:
        raise SettingsError(f"{e}; skipped {describe_failures(result.failures)}") from None
    feats, rows_label, rows_track = window_rows(result, labels)
    names = [str(n) for n in getattr(paths, "names", paths)]  # a dataset's rows: their recording ids
    names = [names[idx] for idx in result.ok]
    examples = {}
    for i, g in enumerate(genres):
        first = next((paths[k] for k in result.ok if labels[k] == i), None)
        if first is not None:
            y = first if isinstance(first, np.ndarray) else load_audio(first, sr=SAMPLE_RATE)
            examples[g] = y[: int(clip_seconds * SAMPLE_RATE)]
    source = s.dataset if s.dataset else os.pathsep.join(str(Path(d).expanduser()) for d in s.data_dir)
    skipped = list(result.failures) + sorted(getattr(paths, "errors", {}).items())
    return Dataset(feats, rows_label, rows_track, names, genres, source, skipped, examples)


def _pick_genres(available, wanted):
    if not wanted:
        return list(available)
    wanted = [g.strip() for g in wanted.split(",") if g.strip()]
    missing = [g for g in wanted if g not in available]
    if missing:
        raise SettingsError(f"--genres: {missing} not found; available: {available}")
    if len(set(wanted)) != len(wanted):
        raise SettingsError(f"--genres: {wanted} names a genre twice")
    return wanted


def _cache(s):
    return False if s.cache_dir == "none" else s.cache_dir


def split_tracks(track_labels, proportions, seed, groups=None):
    """Stratified, seeded split of tracks: returns (train, val, test) arrays of track indices.

    Each genre's tracks are shuffled and divided in the given proportions (at least one track for
    training); with proportions 120,30,30 and 180 clips per genre that is exactly 120/30/30. A
    non-zero validation or test share gets at least one track of a genre that has three or more
    (round() alone would give 3 recordings x 30/180 = 0, leaving nothing to stop early on).

    With `groups` (each track's artist, `workbench.artists.track_groups`) whole artists are dealt
    out instead of tracks: each genre's artists (by their most frequent genre) are shuffled and
    given to validation and test until those hold their share of the genre's tracks, so no artist
    is on two sides of the split. A genre with fewer artists than parts keeps its artists for
    training first, then validation.
    """
    rng = np.random.default_rng(seed)
    w = np.asarray(proportions, dtype=float) / np.sum(proportions)
    if groups is not None:
        return _split_groups(np.asarray(track_labels), np.asarray(groups), w, rng)
    parts = ([], [], [])
    for g in np.unique(track_labels):
        tracks = rng.permutation(np.flatnonzero(track_labels == g))
        n = len(tracks)
        n_val, n_test = int(round(n * w[1])), int(round(n * w[2]))
        n_val, n_test = max(n_val, int(w[1] > 0)), max(n_test, int(w[2] > 0))
        if n - n_val - n_test < 1:
            n_val, n_test = max(0, min(n_val, n - 1 - n_test)), min(n_test, n - 1)
        parts[1].extend(tracks[:n_val])
        parts[2].extend(tracks[n_val:n_val + n_test])
        parts[0].extend(tracks[n_val + n_test:])
    return tuple(np.sort(np.asarray(p, dtype=int)) for p in parts)


def _split_groups(track_labels, groups, w, rng):
    """split_tracks by whole artist groups (see there).

    Within a genre the artists are dealt from the smallest to the largest (ties in a seeded random
    order) to test, then validation, until each holds its share of the genre's tracks; the rest,
    the largest artists among them, train. So one prolific artist (GTZAN's Bob Marley, Britney
    Spears) does not swallow a test split, and training keeps at least one artist of every genre.
    """
    names = np.unique(groups)
    genre_of = {a: np.bincount(track_labels[groups == a]).argmax() for a in names}
    size = {a: int((groups == a).sum()) for a in names}
    parts = ([], [], [])
    for g in np.unique(track_labels):
        artists = [a for a in names if genre_of[a] == g]
        artists = sorted((artists[i] for i in rng.permutation(len(artists))), key=lambda a: size[a])
        n = sum(size[a] for a in artists)
        want = {2: max(round(n * w[2]), int(w[2] > 0)), 1: max(round(n * w[1]), int(w[1] > 0))}
        have = {1: 0, 2: 0}
        for k, a in enumerate(artists):
            last = k == len(artists) - 1
            part = 0 if last else next((p for p in (2, 1) if have[p] < want[p]), 0)
            parts[part].extend(np.flatnonzero(groups == a))
            if part:
                have[part] += size[a]
    return tuple(np.sort(np.asarray(p, dtype=int)) for p in parts)


def feature_stats(x):
    """Per-input mean and std of the training rows (x: (rows, 59) or (rows, 59 + embedding)).

    A constant feature among the 59 gets std 1 (no blow-up). The front end's embedding units are
    ReLU outputs: on a small training set some are zero almost everywhere yet fire on other music,
    where a tiny std would turn them into z-scores in the millions. Their std is floored at a tenth
    of the embedding's median std, which keeps every unit on one scale.
    """
    mean, std = x.mean(0), x.std(0)
    std = np.where(std < 1e-8, 1.0, std)
    if x.shape[1] > N_FEATURES:
        emb = std[N_FEATURES:]
        std[N_FEATURES:] = np.maximum(emb, 0.1 * np.median(emb))
    return mean, std


@dataclass
class Splits:
    """A dataset split by track, with the training split's stats and the rows as tensors."""

    tracks: tuple      # (train, val, test) arrays of track indices
    rows: list         # (train, val, test) arrays of row indices into data.features
    mean: np.ndarray   # (num_features,) training rows' mean
    std: np.ndarray    # (num_features,) training rows' std (constant features: 1)
    tensors: list      # (train, val, test) pairs (raw features float32 tensor, labels long tensor)
    groups: np.ndarray  # (n_tracks,) artist group of every track (--artists; else each track its own)


def prepare_splits(data, s):
    """Split `data` by track as `s.split` and `s.seed` say; stats of the training rows; tensors.

    The tensors hold raw features: the model z-scores them with the stats in its config.
    """
    track_labels = np.asarray([data.labels[data.tracks == t][0] for t in range(len(data.track_names))])
    groups = track_groups(data.track_names, load_artist_index(s.artists))  # read once per run
    tracks = split_tracks(track_labels, [float(v) for v in s.split.split(",")], s.seed, groups if s.artists else None)
    if any(len(part) == 0 for part in tracks):
        raise SettingsError(f"--split {s.split}: expected at least one training, one validation and one test "
                            f"track, got {'/'.join(str(len(p)) for p in tracks)}")
    rows = [np.flatnonzero(np.isin(data.tracks, part)) for part in tracks]
    mean, std = feature_stats(data.features[rows[0]])
    tensors = [(torch.from_numpy(data.features[r]).float(), torch.from_numpy(data.labels[r]).long()) for r in rows]
    return Splits(tracks, rows, mean.astype(np.float32), std.astype(np.float32), tensors, groups)


