"""Recordings and labels from a Hugging Face ``datasets`` dataset: a Hub id, a ``save_to_disk``
folder or an ``audiofolder`` directory.

The audio column is cast to ``Audio(decode=False)``, so each row gives the file's ``path`` and
``bytes`` and :mod:`decoding` turns them into samples: ``datasets`` 5 would decode with torchcodec,
which needs FFmpeg on the system. Nothing is written to disk (bytes are decoded in memory).

An ``audiofolder`` directory is read here, with ``datasets``' rules (one sub-folder per label;
``train/``, ``test/``, ``validation/`` top-level folders as splits; a ``metadata.csv`` or
``metadata.jsonl`` with a ``file_name`` column adds columns), because ``datasets``' own builder
encodes every file with torchcodec even when nothing is decoded.

Typical use::

    loaded = load_audio_dataset("marsyas/gtzan", label_column="genre")   # needs a network
    for rec in iter_recordings(loaded, sr=22050):
        rec.recording_id, rec.label, rec.waveform, rec.sr
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from decoding import AudioError, decode_audio, is_audio_file

__all__ = ["DatasetError", "LoadedDataset", "Recording", "DatasetSources", "load_audio_dataset", "rows", "decode_row",
           "iter_recordings"]

#: Top-level folder names an audiofolder treats as splits.
_SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test", "eval": "test",
                "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation"}


class DatasetError(ValueError):
    """A dataset that cannot be used as asked (missing column, split or folder): one line."""


class LoadedDataset(NamedTuple):
    """A dataset ready to read: its rows, which columns hold audio and label, the label names."""

    dataset: "object"  # datasets.Dataset, its audio column cast to Audio(decode=False)
    source: str
    audio_column: str
    label_column: str
    label_names: Optional[List[str]]  # a ClassLabel's names; None for a column of strings
    splits: List[str]  # the split of each row (its recording id starts with it)


class Recording(NamedTuple):
    recording_id: str
    label: str
    waveform: np.ndarray  # (n_samples,) float32 at sr
    sr: int


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError("training from a Hugging Face dataset needs `datasets`: pip install datasets") from None
    return datasets


def _is_saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _metadata(root: Path) -> dict:
    """{file path relative to root: {column: value}} from metadata.csv or metadata.jsonl files."""
    found = {}
    for meta in sorted(root.rglob("metadata.csv")) + sorted(root.rglob("metadata.jsonl")):
        with open(meta, encoding="utf-8", newline="") as fh:
            records = csv.DictReader(fh) if meta.suffix == ".csv" else (json.loads(l) for l in fh if l.strip())
            for record in records:
                name = record.pop("file_name", None)
                if name is None:
                    raise DatasetError(f"{meta}: expected a file_name column, got {sorted(record)}")
                found[str((meta.parent / name).relative_to(root))] = record
    return found


def _audiofolder_split(root: Path, meta: dict):
    """One split of an audiofolder: a Dataset of audio paths, the sub-folder label and metadata."""
    datasets = _datasets()
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_audio_file(p))
    if not files:
        raise DatasetError(f"{root}: no audio files (expected an audiofolder: one sub-folder per label)")
    columns = {"audio": [str(p) for p in files]}
    folders = [p.parent.name if p.parent != root else None for p in files]
    features = {"audio": datasets.Value("string")}
    if all(folders):
        names = sorted(set(folders))
        columns["label"] = [names.index(f) for f in folders]
        features["label"] = datasets.ClassLabel(names=names)
    extra = [meta.get(str(p.relative_to(root.parent if root.name in _SPLIT_NAMES else root)), {}) for p in files]
    for key in sorted({k for record in extra for k in record}):
        columns[key] = [record.get(key) for record in extra]
        features.setdefault(key, datasets.Value("string"))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _audiofolder(folder: Path):
    datasets = _datasets()
    meta = _metadata(folder)
    split_dirs = {p.name: p for p in folder.iterdir() if p.is_dir() and p.name.lower() in _SPLIT_NAMES}
    if not split_dirs:
        return datasets.DatasetDict({"train": _audiofolder_split(folder, meta)})
    return datasets.DatasetDict({_SPLIT_NAMES[name.lower()]: _audiofolder_split(path, meta)
                                 for name, path in sorted(split_dirs.items())})


def _open_any(source: str, cache_dir: Optional[str]):
    """A Dataset or DatasetDict from a save_to_disk folder, an audiofolder or a Hub id."""
    datasets = _datasets()
    folder = Path(source)
    if folder.is_dir():
        return datasets.load_from_disk(str(folder)) if _is_saved_to_disk(folder) else _audiofolder(folder)
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:  # a path, not a Hub id (user/name)
        raise DatasetError(f"--dataset {source}: no such folder (expected a folder, or a Hub id like user/name)")
    try:
        return datasets.load_dataset(source, cache_dir=cache_dir)
    except ImportError as exc:  # a Hub repo of raw audio files goes through datasets' torchcodec encoder
        raise DatasetError(f"--dataset {source}: datasets needs {exc} to build it; download it and pass the "
                           "folder (an audiofolder) instead") from None


def _select(data, split: Optional[str], source: str) -> Tuple[List["object"], List[str]]:
    """([Dataset per chosen split], [split name per Dataset]); ``split`` may join names with "+"."""
    datasets = _datasets()
    if isinstance(data, datasets.Dataset):
        if split not in (None, str(data.split or "train")):
            raise DatasetError(f"--dataset {source}: has one split ({data.split or 'train'}), not {split!r}")
        return [data], [str(data.split or "train")]
    wanted = list(data) if split is None else split.split("+")
    missing = [s for s in wanted if s not in data]
    if missing:
        raise DatasetError(f"--dataset {source}: no split {', '.join(missing)} (has {', '.join(data)})")
    return [data[s] for s in wanted], wanted


def _column(features, wanted: Optional[str], kind: str, fallbacks: Tuple[str, ...], source: str) -> str:
    """The column to use: ``wanted``, else the first of type ``kind``, else the first fallback name."""
    if wanted is not None:
        if wanted not in features:
            raise DatasetError(f"--dataset {source}: no column {wanted!r} (columns: {', '.join(features)})")
        return wanted
    typed = [name for name, f in features.items() if type(f).__name__ == kind]
    named = [name for name in fallbacks if name in features]
    if typed or named:
        return (typed or named)[0]
    flag = "--audio-column" if kind == "Audio" else "--label-column"
    raise DatasetError(f"--dataset {source}: no {kind} column and none named {' or '.join(fallbacks)}; "
                       f"choose one with {flag} (columns: {', '.join(features)})")


def load_audio_dataset(source: Union[str, os.PathLike], *, split: Optional[str] = None,
                       audio_column: Optional[str] = None, label_column: Optional[str] = None,
                       cache_dir: Optional[str] = None) -> LoadedDataset:
    """Open a dataset of labelled recordings.

    Parameters
    ----------
    source : str or os.PathLike
        A ``save_to_disk`` folder, an ``audiofolder`` directory, or a Hub id (``marsyas/gtzan``;
        needs a network, or the ``datasets`` cache).
    split : str, optional
        One split (``"train"``) or several joined by ``+``; default: every split, since training
        makes its own recording-level splits.
    audio_column, label_column : str, optional
        Default: the first ``Audio`` column (or ``audio``); the first ``ClassLabel`` column (or
        ``label``, ``genre``).
    cache_dir : str, optional
        ``datasets``' download cache (Hub ids only).

    Returns
    -------
    LoadedDataset

    Raises
    ------
    DatasetError
        No such folder, split or column (the message lists what there is).
    """
    datasets = _datasets()
    source = str(source)
    parts, names = _select(_open_any(source, cache_dir), split, source)
    features = parts[0].features
    audio_column = _column(features, audio_column, "Audio", ("audio",), source)
    label_column = _column(features, label_column, "ClassLabel", ("label", "genre"), source)
    parts = [p.cast_column(audio_column, datasets.Audio(decode=False)) for p in parts]
    data = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    label_feature = data.features[label_column]
    names_of = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    splits = [name for part, name in zip(parts, names) for _ in range(len(part))]
    return LoadedDataset(data, source, audio_column, label_column, names_of, splits)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


def _label_name(loaded: LoadedDataset, value) -> Optional[str]:
    if value is None or (loaded.label_names is not None and value == -1):  # -1: ClassLabel's "no label"
        return None
    return loaded.label_names[value] if loaded.label_names is not None else str(value)


def rows(loaded: LoadedDataset) -> List[Tuple[str, Optional[str]]]:
    """(recording id, label name or None) of every row, without reading any audio.

    The id is ``<split>/<file name>`` (``<split>/row-<i>`` for rows with bytes only); a repeated
    name gets its row number appended, so ids are unique.
    """
    import pyarrow.compute as pc

    # Only the paths leave Arrow: the bytes (a whole collection, when embedded) stay mapped on disk.
    column = loaded.dataset.with_format("arrow")[loaded.audio_column]
    paths = pc.struct_field(column, "path").to_pylist()
    labels = list(loaded.dataset[loaded.label_column])
    ids, seen = [], set()
    for i, (path, split) in enumerate(zip(paths, loaded.splits)):
        name = Path(path).name if path else f"row-{i}"
        rec = f"{split}/{name}"
        if rec in seen:
            rec = f"{rec}#{i}"
        seen.add(rec)
        ids.append(rec)
    return [(rec, _label_name(loaded, label)) for rec, label in zip(ids, labels)]


def decode_row(loaded: LoadedDataset, index: int, sr: int = 22050) -> np.ndarray:
    """The audio of row ``index`` as (n_samples,) float32 at ``sr``: its bytes decoded in memory
    when the dataset holds them, else its file.

    Raises
    ------
    AudioError
        Undecodable audio, or a row with neither bytes nor an existing path (names the row).
    """
    cell = loaded.dataset[int(index)][loaded.audio_column] or {}
    path, data = cell.get("path"), cell.get("bytes")
    name = f"{loaded.source}[{index}]" + (f" ({path})" if path else "")
    if data:
        return decode_audio(data, sr, name=name)
    if path:
        return decode_audio(path, sr, name=name)
    raise AudioError(f"{name}: row has neither audio bytes nor a path")


def iter_recordings(loaded: LoadedDataset, sr: int = 22050, *,
                    errors: Optional[list] = None) -> Iterator[Recording]:
    """Every labelled row as a :class:`Recording`, decoded one at a time.

    Parameters
    ----------
    loaded : LoadedDataset
    sr : int
    errors : list, optional
        Rows without a label or with undecodable audio are appended as (recording id, message)
        and skipped; without a list, an undecodable row raises :class:`AudioError`.
    """
    for index, (rec, label) in enumerate(rows(loaded)):
        if label is None:
            if errors is None:
                continue
            errors.append((rec, f"{rec}: no label in column {loaded.label_column!r}"))
            continue
        try:
            waveform = decode_row(loaded, index, sr)
        except AudioError as exc:
            if errors is None:
                raise
            errors.append((rec, str(exc)))
            continue
        yield Recording(rec, label, waveform, sr)


class DatasetSources:
    """A dataset's labelled rows as the sources `workbench.batch.extract_many` takes, decoded lazily.

    Item ``i`` is the row's file path when the dataset points at a local file without its bytes (the
    feature cache then keys it by the file), else the row decoded to (n_samples,) float32 at ``sr``.
    ``names`` are the rows' recording ids (:func:`rows`); rows without a label are left out and
    listed in ``unlabelled``.
    """

    def __init__(self, loaded: LoadedDataset, sr: int = 22050):
        self.loaded, self.sr = loaded, sr
        listed = rows(loaded)
        self.index = [i for i, (_, label) in enumerate(listed) if label is not None]
        self.names = [listed[i][0] for i in self.index]
        self.labels = [listed[i][1] for i in self.index]
        self.unlabelled = [rec for rec, label in listed if label is None]
        self.errors = {}  # recording id -> why its audio could not be decoded

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int):
        i = self.index[k]
        cell = self.loaded.dataset[i][self.loaded.audio_column] or {}
        if not cell.get("bytes") and cell.get("path") and Path(cell["path"]).is_file():
            return cell["path"]
        try:
            return decode_row(self.loaded, i, self.sr)
        except AudioError as exc:  # the extractor then fails this source ("empty"); the reason is kept here
            self.errors[self.names[k]] = str(exc)
            return np.zeros(0, np.float32)

    def __iter__(self):
        return (self[k] for k in range(len(self)))
