"""Genre tags of a music library: read, normalised, written back and undone (mutagen).

Where each container keeps its genre:

=====================  ==============================  ==========================================
container              tag                             notes
=====================  ==============================  ==========================================
MP3, WAV, AIFF         ID3v2 ``TCON`` (or ID3v1)        numeric refs "(17)" / "17" -> "Rock"
M4A, MP4, M4B          ``©gen`` (or ``gnre``)           mutagen reads ``gnre`` (an ID3v1 index + 1) as ``©gen``
OGG, Opus, FLAC        Vorbis comment ``GENRE``         one comment per value
WMA, ASF               ``WM/Genre`` (+ ``WM/GenreID``)
APE, WavPack, MPC      APEv2 ``Genre``
=====================  ==============================  ==========================================

A tag may hold several genres, as several values or joined ("Rock; Pop", "Rock/Pop",
"Rock, Pop"): :func:`read_genres` returns them split, :func:`normalise_genre` gives the label
training compares ("Hip-Hop", "hip hop" and "Hip Hop" are all ``hiphop``).

Writing (:func:`write_genres`) changes the genre keys and nothing else: the file is copied, mutagen
saves the tag on the copy (it rewrites tag blocks only, never audio frames), the copy is fsynced and
moved over the original with ``os.replace`` (atomic on one file system), keeping the file's mode.
Every change can go to an undo log (:class:`UndoLog`, JSON lines, fsynced per file) that
:func:`restore` plays back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

import mutagen
from mutagen.apev2 import APEv2
from mutagen.asf import ASFTags
from mutagen.id3 import ID3, TCON
from mutagen.mp4 import MP4Tags

__all__ = ["TagError", "split_genres", "normalise_genre", "read_genres", "write_genres", "UndoLog", "restore",
           "TagLabels", "labels_from_tags", "contradicted_tags"]

PathLike = Union[str, os.PathLike]
#: The genre keys of each tag type (all are cleared on write; the first receives the new values).
_GENRE_KEYS = {ID3: ("TCON",), MP4Tags: ("\xa9gen",), ASFTags: ("WM/Genre", "WM/GenreID"), APEv2: ("Genre",)}
_VORBIS_KEYS = ("genre",)  # Vorbis comment names are case-insensitive; mutagen's dicts are too
#: Separators of several genres in one value: ";", "/", ",", "|" and ID3v2.4's NUL.
_SEPARATORS = re.compile(r"\s*[;/,|\x00]\s*")


class TagError(ValueError):
    """A file whose genre tag cannot be read or written; the message is one line naming the file."""


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def split_genres(values: Iterable[str]) -> List[str]:
    """Stored genre values -> one string per genre, separators split, blanks dropped, order kept.

    >>> split_genres(["Rock; Pop", "Jazz/Funk", " "])
    ['Rock', 'Pop', 'Jazz', 'Funk']
    """
    return [part.strip() for value in values for part in _SEPARATORS.split(str(value)) if part.strip()]


def normalise_genre(name: str) -> str:
    """The label a genre string stands for: lower case, without spaces, hyphens, underscores or dots.

    >>> [normalise_genre(s) for s in ("Hip-Hop", "hip hop", "Hip Hop", " ROCK ", "R&B", "Drum_and_Bass")]
    ['hiphop', 'hiphop', 'hiphop', 'rock', 'r&b', 'drumandbass']
    """
    return re.sub(r"[\s\-_.]+", "", str(name).casefold())


# --------------------------------------------------------------------------------------------
# Opening a file's tags
# --------------------------------------------------------------------------------------------


def _open(path: Path):
    """mutagen's object for ``path`` (tags may be None: none written yet)."""
    if not path.is_file():
        raise TagError(f"{path}: file not found" if not path.exists() else f"{path}: not a regular file")
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError) as exc:
        raise TagError(f"{path}: cannot read tags ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if audio is None:
        raise TagError(f"{path}: unsupported container for genre tags ({path.suffix or 'no extension'}; "
                       "supported: MP3, M4A/MP4, OGG, Opus, FLAC, WMA, WAV/AIFF with ID3, APEv2)")
    return audio


def _genre_keys(tags) -> Tuple[str, ...]:
    for kind, keys in _GENRE_KEYS.items():
        if isinstance(tags, kind):
            return keys
    return _VORBIS_KEYS


def _stored(tags) -> Dict[str, List[str]]:
    """{genre key: its stored values as strings}, only the keys present (raw: "(17)" stays)."""
    if tags is None:
        return {}
    found = {}
    for key in _genre_keys(tags):
        if isinstance(tags, ID3):
            frame = tags.get(key)
            values = list(frame.text) if frame is not None else None
        else:
            values = [str(v) for v in tags[key]] if key in tags else None
        if values is not None:
            found[key] = values
    return found


def _set_stored(tags, stored: Dict[str, List[str]]) -> None:
    """Replace every genre key of ``tags`` by ``stored`` (a key missing there is removed)."""
    for key in _genre_keys(tags):
        if isinstance(tags, ID3):
            tags.delall(key)
            if key in stored:
                tags.add(TCON(encoding=3, text=stored[key]))
        else:
            if key in tags:
                del tags[key]
            if key in stored:
                tags[key] = stored[key]


def read_genres(path: PathLike, *, normalised: bool = False) -> List[str]:
    """The genres a file's tag holds, in order, several values and separators split.

    Parameters
    ----------
    path : str or os.PathLike
    normalised : bool
        Return :func:`normalise_genre` labels, duplicates dropped.

    Returns
    -------
    list of str
        Empty when the file has no genre tag. ID3 numeric genres come back as names ("(17)" and
        "17" are "Rock"); so does an MP4 ``gnre`` atom.

    Raises
    ------
    TagError
        Missing file, unreadable tags or a container without genre tags (one line naming the file).
    """
    path = Path(path)
    tags = _open(path).tags
    if tags is None:
        return []
    if isinstance(tags, ID3):
        frame = tags.get("TCON")
        values = frame.genres if frame is not None else []  # resolves ID3v1 numbers
    else:
        values = _stored(tags).get(_genre_keys(tags)[0], [])
    genres = split_genres(values)
    if normalised:
        genres = list(dict.fromkeys(normalise_genre(g) for g in genres))
    return genres


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _check_writable(path: Path) -> None:
    """Refuse a file its owner marked read-only (even for root, who could write it anyway) or one
    this process cannot replace."""
    mode = path.stat().st_mode
    if not mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise TagError(f"{path}: read-only file (mode {stat.filemode(mode)}); genre tag not written")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise TagError(f"{path}: its folder is read-only, so the file cannot be replaced; genre tag not written")


def _save(audio, path: Path) -> None:
    """mutagen's save, keeping an ID3v2.3 tag at v2.3 (its default would convert it to v2.4)."""
    tags = audio.tags
    if isinstance(tags, ID3) and tags.version < (2, 4, 0):
        audio.save(path, v2_version=3)
    else:
        audio.save(path)


def _edit_atomically(path: Path, stored: Dict[str, List[str]]) -> None:
    """Copy ``path``, set the genre keys on the copy, fsync it and move it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tags.tmp", dir=path.parent)
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        shutil.copymode(path, tmp)  # mkstemp makes it private; the file keeps its own mode
        audio = _open(Path(tmp))
        if audio.tags is None:
            audio.add_tags()
        _set_stored(audio.tags, stored)
        _save(audio, Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())  # the rename must not land before the data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_genres(path: PathLike, genres: Iterable[str], *, dry_run: bool = False,
                 undo_log: Optional["UndoLog"] = None) -> Dict[str, List[str]]:
    """Set a file's genre tag to ``genres`` (one value each: a multi-valued tag), nothing else.

    Parameters
    ----------
    path : str or os.PathLike
    genres : iterable of str
        The new genres, e.g. ``["rock"]`` or the top-k predictions.
    dry_run : bool
        Check everything (container, permissions) and return the old value without writing.
    undo_log : UndoLog, optional
        The old and new values are appended (and fsynced) before the file is replaced.

    Returns
    -------
    dict of str to list of str
        The genre keys as stored before, e.g. ``{"TCON": ["(17)"]}`` (empty: there was none); what
        :func:`restore` puts back.

    Raises
    ------
    TagError
        Missing, read-only or unsupported file, or tags mutagen cannot parse or save.
    """
    path = Path(path)
    genres = [str(g) for g in genres]
    if not genres or not all(g.strip() for g in genres):
        raise TagError(f"{path}: expected at least one non-empty genre to write, got {genres!r}")
    audio = _open(path)
    _check_writable(path)
    old = _stored(audio.tags)
    if dry_run:
        return old
    if undo_log is not None:
        undo_log.record(path, old, genres)
    try:
        _edit_atomically(path, {_main_key(audio): genres})
    except TagError:
        raise
    except (mutagen.MutagenError, OSError) as exc:
        raise TagError(f"{path}: cannot write the genre tag ({type(exc).__name__}: {exc})") from None
    return old


def _main_key(audio) -> str:
    """The key that holds a container's genre names (TCON, ©gen, GENRE, WM/Genre, Genre)."""
    if audio.tags is None:
        audio.add_tags()  # in memory only: which kind of tag this container takes
    return _genre_keys(audio.tags)[0]


# --------------------------------------------------------------------------------------------
# Undo
# --------------------------------------------------------------------------------------------


class UndoLog:
    """An append-only JSON-lines file of genre changes: ``{"path", "old", "new"}`` per file.

    Each line is flushed and fsynced before the file it describes is replaced, so after a crash
    the log holds every change that may have happened. Use as a context manager.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def record(self, path: PathLike, old: Dict[str, List[str]], new: List[str]) -> None:
        line = json.dumps({"path": str(Path(path).resolve()), "old": old, "new": list(new)}, ensure_ascii=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "UndoLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _log_entries(log: Path) -> List[dict]:
    entries = []
    with open(log, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entries.append({"path": entry["path"], "old": dict(entry["old"]), "new": list(entry["new"])})
            except (ValueError, KeyError, TypeError):
                if fh.read(1) == "":  # a last line cut short by a crash: its file was never replaced
                    break
                raise TagError(f"{log}:{number}: not an undo-log line (expected JSON with path, old, new)") from None
    return entries


def restore(log: PathLike) -> List[Tuple[str, str]]:
    """Put back the genre tags an :class:`UndoLog` recorded, newest change first.

    A file whose genre tag is no longer what was written (edited since) is left alone; one already
    back at its old value (the run stopped between the log line and the write) needs nothing.

    Parameters
    ----------
    log : str or os.PathLike

    Returns
    -------
    list of (path, outcome)
        outcome is ``"restored"``, ``"unchanged"`` (already the old value), ``"skipped: ..."``
        (edited since) or ``"error: ..."`` (a :class:`TagError` message).
    """
    outcomes = []
    for entry in reversed(_log_entries(Path(log))):
        path = Path(entry["path"])
        try:
            audio = _open(path)
            current = _stored(audio.tags)
            if current == entry["old"]:
                outcomes.append((str(path), "unchanged"))
                continue
            if current.get(_main_key(audio)) != entry["new"]:
                outcomes.append((str(path), f"skipped: genre is now {current or 'absent'}, not the "
                                            f"{entry['new']} written"))
                continue
            _check_writable(path)
            _edit_atomically(path, entry["old"])
            outcomes.append((str(path), "restored"))
        except TagError as exc:
            outcomes.append((str(path), f"error: {exc}"))
    return outcomes


# --------------------------------------------------------------------------------------------
# Tags as labels, and labels against tags
# --------------------------------------------------------------------------------------------


class TagLabels(NamedTuple):
    """Recordings labelled by their own tags: parallel ``paths`` and ``labels``, ``skipped`` as
    (path, reason) for those without a usable tag, ``counts`` {label: songs}."""

    paths: List[str]
    labels: List[str]
    skipped: List[Tuple[str, str]]
    counts: Dict[str, int]


def labels_from_tags(paths: Iterable[PathLike], *, genres: Optional[Iterable[str]] = None,
                     min_songs: int = 2) -> TagLabels:
    """Label each recording with its first tag genre (normalised) that training learns.

    Parameters
    ----------
    paths : iterable of path
    genres : iterable of str, optional
        The genres to learn (normalised before comparing); default: every genre the tags name.
    min_songs : int
        Fewest songs a learned genre may have.

    Returns
    -------
    TagLabels

    Raises
    ------
    TagError
        A genre with fewer than ``min_songs`` songs (the message gives every genre's count), or no
        recording with a usable tag at all.
    """
    wanted = None if genres is None else list(dict.fromkeys(normalise_genre(g) for g in genres))
    kept, labels, skipped = [], [], []
    for path in paths:
        try:
            found = read_genres(path, normalised=True)
        except TagError as exc:
            skipped.append((str(path), str(exc)))
            continue
        usable = [g for g in found if wanted is None or g in wanted]
        if not usable:
            reason = "no genre tag" if not found else f"genre {', '.join(found)} not among {', '.join(wanted)}"
            skipped.append((str(path), f"{path}: {reason}"))
            continue
        kept.append(str(path))
        labels.append(usable[0])
    counts = {g: labels.count(g) for g in (wanted or sorted(set(labels)))}
    _check_counts(counts, min_songs, len(skipped))
    return TagLabels(kept, labels, skipped, counts)


def _check_counts(counts: Dict[str, int], min_songs: int, n_skipped: int) -> None:
    few = [g for g, n in counts.items() if n < min_songs]
    if not counts or sum(counts.values()) == 0:
        raise TagError(f"no recording has a usable genre tag ({n_skipped} skipped)")
    if few:
        listed = ", ".join(f"{g} {n}" for g, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise TagError(f"genre{'s' if len(few) > 1 else ''} {', '.join(few)} ha{'ve' if len(few) > 1 else 's'} "
                       f"fewer than {min_songs} songs (songs per genre: {listed}); choose the genres to learn "
                       "with --genres")


def contradicted_tags(rows: Iterable[Tuple[str, str, float, Iterable[str]]], *, min_confidence: float = 0.8
                      ) -> List[Tuple[str, str, float, List[str]]]:
    """Songs whose tag a confident prediction contradicts (likely mislabelled), most confident first.

    Parameters
    ----------
    rows : iterable of (path, predicted genre, confidence in [0, 1], the tag's genres)
    min_confidence : float
        Predictions below this never contradict a tag.

    Returns
    -------
    list of (path, predicted genre, confidence, the tag's genres)
        Only songs with a genre tag that does not name the prediction (:func:`names_genre`).
    """
    found = []
    for path, genre, confidence, tagged in rows:
        tagged = list(tagged)
        if confidence >= min_confidence and tagged and not any(names_genre(g, genre) for g in tagged):
            found.append((str(path), genre, float(confidence), tagged))
    return sorted(found, key=lambda row: -row[2])


def names_genre(tag: str, genre: str) -> bool:
    """Whether a tag's genre string names ``genre``: the same label (:func:`normalise_genre`), or
    a compound of it ("Alternative Rock", "Pop Rock", "Acid Jazz"). Libraries tag sub-genres:
    without the second rule every "Alternative Rock" song called rock was listed as mislabelled
    (13 of 17 listed songs on a real 82-song library).

    >>> [names_genre(t, "rock") for t in ("Rock", "Alternative Rock", "pop-rock", "Rock & Roll", "Hard Rock")]
    [True, True, True, True, True]
    >>> [names_genre(t, g) for t, g in (("Hard Rock", "metal"), ("Classic Rock", "classical"), ("Trip-Hop", "hiphop"))]
    [False, False, False]
    """
    label = normalise_genre(genre)
    return normalise_genre(tag) == label or label in {normalise_genre(w) for w in re.split(r"[\s\-_.&+]+", tag)}


class LibraryTags:
    """What ``classify.py --compare-tags`` and ``--write-tags`` do to each batch of predictions.

    Parameters
    ----------
    compare : bool
        Add each file's current genre tag to its record (column ``tag``, values joined by "; ").
    write_k : int
        0: write nothing; k: write the top-k predicted genres as the file's genre tag (column
        ``tag_written``).
    dry_run : bool
        Say what would be written (``tag_written``), write nothing, log nothing.
    undo_log : path, optional
        Where the old values go (required when writing for real).
    """

    def __init__(self, compare: bool = False, write_k: int = 0, dry_run: bool = False,
                 undo_log: Optional[PathLike] = None):
        self.compare, self.write_k, self.dry_run = compare, write_k, dry_run
        self.columns = (["tag"] if compare else []) + (["tag_written"] if write_k else [])
        self.undo = UndoLog(undo_log) if write_k and not dry_run else None

    def apply(self, records: List[dict]) -> List[Tuple[str, str]]:
        """Fill each record's columns (read, then write: ``tag`` is the value before); return
        (path, message) failures for files whose tag could not be written."""
        failures = []
        for rec in records:
            if self.compare:
                try:
                    rec["tag"] = "; ".join(read_genres(rec["path"]))
                except TagError:
                    rec["tag"] = ""  # an untaggable container has no tag to compare
            if self.write_k:
                genres = [g for g, _ in rec["top"][:self.write_k]]
                try:
                    write_genres(rec["path"], genres, dry_run=self.dry_run, undo_log=self.undo)
                    rec["tag_written"] = "; ".join(genres)
                except TagError as exc:
                    rec["tag_written"] = ""
                    failures.append((rec["path"], str(exc)))
        return failures

    def close(self) -> None:
        if self.undo is not None:
            self.undo.close()
