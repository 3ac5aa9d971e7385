"""workbench/tags.py: genre tags of every container read and normalised, written without touching
the audio or the other tags, refused clearly, and undone."""

import shutil
import stat
import sys
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
from mutagen.id3 import ID3, TALB, TIT2, TPE1, TRCK, TCON

import decoding as D
from workbench import tags as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_library import make_library  # noqa: E402

TAGGABLE = ("mp3", "wav", "flac", "vorbis", "opus", "aac", "alac", "video", "wma")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("originals"), seconds=1.0)


@pytest.fixture
def library(originals, tmp_path):
    """A fresh copy of the library for each test."""
    return {name: Path(shutil.copy(path, tmp_path / path.name)) for name, path in originals.items()}


def set_native(path, genres=None, **others):
    """Write tags with mutagen's own API for the container: ``genres`` (list, or None: no genre)
    and title/artist/album/track as given."""
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    if isinstance(tags, ID3):
        for frame, key in ((TIT2, "title"), (TPE1, "artist"), (TALB, "album"), (TRCK, "track")):
            if key in others:
                tags.add(frame(encoding=3, text=[others[key]]))
        if genres is not None:
            tags.add(TCON(encoding=3, text=genres))
    else:
        keys = {mutagen.mp4.MP4Tags: ("\xa9nam", "\xa9ART", "\xa9alb", None, "\xa9gen"),
                mutagen.asf.ASFTags: ("Title", "Author", "WM/AlbumTitle", "WM/TrackNumber", "WM/Genre")}
        names = keys.get(type(tags), ("title", "artist", "album", "tracknumber", "genre"))
        for key, name in zip(("title", "artist", "album", "track"), names):
            if key in others and name:
                tags[name] = [others[key]]
        if genres is not None:
            tags[names[4]] = genres
    audio.save()


def other_tags(path):
    """Every tag but the genre keys, as comparable strings."""
    tags = mutagen.File(path).tags
    if tags is None:
        return {}
    genre = {"TCON", "\xa9gen", "WM/Genre", "WM/GenreID", "genre", "GENRE"}
    if isinstance(tags, ID3):
        return {k: str(v) for k, v in tags.items() if k not in genre}
    items = tags.items() if hasattr(tags, "items") else tags
    return {str(k): [str(x) for x in v] for k, v in items if str(k) not in genre and str(k).lower() != "genre"}


@pytest.mark.parametrize("name, outcome", [
    ("Hip-Hop", "hiphop"), ("hip hop", "hiphop"), ("Hip Hop", "hiphop"), ("  HIP_HOP ", "hiphop"),
    ("Rock", "rock"), ("R&B", "r&b"), ("Drum & Bass", "drum&bass"), ("Electro.Pop", "electropop"),
])
def test_normalise_genre(name, outcome):
    assert T.normalise_genre(name) == outcome


def test_split_genres():
    assert T.split_genres(["Rock; Pop", "Jazz/Funk", "Blues,Soul", "A|B", "x\x00y", " "]) == [
        "Rock", "Pop", "Jazz", "Funk", "Blues", "Soul", "A", "B", "x", "y"]


@pytest.mark.parametrize("name", TAGGABLE)
def test_read_every_container(library, name):
    path = library[name]
    assert T.read_genres(path) == []
    set_native(path, ["Hip-Hop", "Jazz; Funk"], title="t")
    assert T.read_genres(path) == ["Hip-Hop", "Jazz", "Funk"]
    assert T.read_genres(path, normalised=True) == ["hiphop", "jazz", "funk"]


def test_numeric_id3_genres(library):
    path = library["mp3"]
    set_native(path, ["(17)", "17", "(32)Classical", "Hip Hop"])
    assert T.read_genres(path, normalised=True) == ["rock", "classical", "hiphop"]
    # an ID3v1 tag alone (one genre byte): 17 is Rock
    audio = mutagen.File(path)
    audio.tags.setall("TCON", [TCON(encoding=0, text=["(17)"])])
    audio.save(v1=2)
    ID3().delete(path, delete_v1=False, delete_v2=True)
    assert T.read_genres(path) == ["Rock"]


def test_mp4_gnre_atom(library):
    """``gnre`` holds an ID3v1 index + 1 (mutagen writes only ``©gen``: the atom is patched in)."""
    path = library["aac"]
    set_native(path, ["\x00\x12"])  # the two bytes of gnre 18, as a ©gen text of the same length
    data = path.read_bytes()
    i = data.index(b"\xa9gen")
    path.write_bytes(data[:i] + b"gnre" + data[i + 4:i + 12] + b"\x00\x00\x00\x00" + data[i + 16:])
    assert T.read_genres(path) == ["Rock"]


@pytest.mark.parametrize("name", TAGGABLE)
def test_write_changes_the_genre_only(library, name):
    path = library[name]
    set_native(path, ["Blues"], title="Song", artist="Someone", album="Record", track="3")
    path.chmod(0o640)
    before_samples = D.decode_audio(path, 22050)
    before_tags = other_tags(path)
    old = T.write_genres(path, ["rock", "pop"])
    assert T.split_genres(next(iter(old.values()))) == ["Blues"]
    assert T.read_genres(path) == ["rock", "pop"]
    np.testing.assert_array_equal(D.decode_audio(path, 22050), before_samples)
    assert other_tags(path) == before_tags and before_tags
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(p.name for p in library.values())  # no temp left


def test_dry_run_touches_nothing(library):
    path = library["flac"]
    set_native(path, ["Jazz"])
    data = path.read_bytes()
    assert T.write_genres(path, ["rock"], dry_run=True) == {"genre": ["Jazz"]}
    assert path.read_bytes() == data


def test_refusals_are_one_line_naming_the_file(library, tmp_path):
    path = library["mp3"]
    data = path.read_bytes()
    path.chmod(0o444)
    with pytest.raises(T.TagError, match=r"mp3.mp3: read-only file \(mode -r--r--r--\)"):
        T.write_genres(path, ["rock"])
    assert path.read_bytes() == data
    sf.write(tmp_path / "old.au", np.zeros(800, np.float32), 8000, format="AU")
    for unsupported in (library["webm"], tmp_path / "old.au"):
        with pytest.raises(T.TagError, match=r"unsupported container for genre tags") as err:
            T.read_genres(unsupported)
        assert str(err.value).startswith(str(unsupported)) and "\n" not in str(err.value)
        with pytest.raises(T.TagError, match=r"unsupported container"):
            T.write_genres(unsupported, ["rock"])
    with pytest.raises(T.TagError, match=r"missing.mp3: file not found"):
        T.read_genres(tmp_path / "missing.mp3")
    with pytest.raises(T.TagError, match=r"at least one non-empty genre"):
        T.write_genres(library["flac"], [""])


def test_undo_log_restores_every_old_value(library, tmp_path):
    set_native(library["mp3"], ["(17)"])  # raw ID3 reference: put back as it was, not as "Rock"
    set_native(library["wma"], ["Hip-Hop", "Funk"])
    set_native(library["aac"], ["Jazz"])
    names = ("mp3", "wma", "aac", "flac", "opus")  # flac and opus: no genre before
    before = {n: T._stored(mutagen.File(library[n]).tags) for n in names}
    log = tmp_path / "undo.jsonl"
    with T.UndoLog(log) as undo:
        for n in names:
            assert T.write_genres(library[n], ["rock"], undo_log=undo) == before[n]
        T.write_genres(library["mp3"], ["pop", "rock"], undo_log=undo)  # written twice: first old wins
    assert len(log.read_text().splitlines()) == len(names) + 1
    set_native(library["opus"], ["Edited By Hand"])  # changed since: left alone
    with open(log, "a") as fh:
        fh.write('{"path": "cut sho')  # a crash mid-line: ignored
    outcomes = dict(T.restore(log))
    assert outcomes[str(library["opus"].resolve())].startswith("skipped: genre is now")
    for n in ("mp3", "wma", "aac", "flac"):
        assert T._stored(mutagen.File(library[n]).tags) == before[n], n
    assert T.read_genres(library["mp3"]) == ["Rock"] and T.read_genres(library["flac"]) == []
    assert all(o in ("unchanged",) or o.startswith("skipped") for _, o in T.restore(log))


def test_labels_from_tags(library, tmp_path):
    set_native(library["mp3"], ["Hip-Hop"])
    set_native(library["flac"], ["hip hop", "Jazz"])
    set_native(library["aac"], ["Rock"])
    set_native(library["opus"], ["rock; pop"])
    set_native(library["wma"], ["Jazz"])
    paths = [library[n] for n in ("mp3", "flac", "aac", "opus", "wma", "vorbis", "webm")]
    got = T.labels_from_tags(paths, genres=["Hip Hop", "ROCK"])
    assert got.labels == ["hiphop", "hiphop", "rock", "rock"] and got.counts == {"hiphop": 2, "rock": 2}
    reasons = dict(got.skipped)
    assert reasons[str(library["wma"])].endswith("genre jazz not among hiphop, rock")
    assert reasons[str(library["vorbis"])].endswith("no genre tag")
    assert "unsupported container" in reasons[str(library["webm"])]
    with pytest.raises(T.TagError, match=r"genre jazz has fewer than 2 songs \(songs per genre: hiphop 2, rock 2, "
                                         r"jazz 1\); choose the genres to learn with --genres"):
        T.labels_from_tags(paths)
    with pytest.raises(T.TagError, match=r"no recording has a usable genre tag \(2 skipped\)"):
        T.labels_from_tags([library["vorbis"], library["webm"]])


def test_contradicted_tags_most_confident_first():
    rows = [("a.mp3", "hiphop", 0.99, ["Hip-Hop"]), ("b.flac", "classical", 0.85, ["Rock"]),
            ("c.m4a", "blues", 0.95, ["Jazz", "Soul"]), ("d.opus", "pop", 0.99, []), ("e.wma", "rock", 0.5, ["Pop"])]
    assert T.contradicted_tags(rows) == [("c.m4a", "blues", 0.95, ["Jazz", "Soul"]),
                                         ("b.flac", "classical", 0.85, ["Rock"])]


def test_a_sub_genre_tag_does_not_contradict_its_genre():
    # A library tags sub-genres: rock for "Alternative Rock" agrees with the tag; metal for "Hard
    # Rock" and classical for "Classic Rock" do not.
    rows = [("a.mp3", "rock", 0.99, ["Alternative Rock"]), ("b.mp3", "metal", 0.98, ["Hard Rock"]),
            ("c.mp3", "jazz", 0.97, ["Acid-Jazz"]), ("d.mp3", "classical", 0.96, ["Classic Rock"]),
            ("e.mp3", "pop", 0.95, ["Pop Rock"]), ("f.mp3", "hiphop", 0.94, ["Trip Hop"])]
    assert [r[0] for r in T.contradicted_tags(rows)] == ["b.mp3", "d.mp3", "f.mp3"]


def test_library_tags_compare_write_dry_run(library, tmp_path):
    set_native(library["mp3"], ["Jazz"])
    records = [{"path": str(library[n]), "top": [["rock", 0.7], ["pop", 0.2]]} for n in ("mp3", "flac", "webm")]
    data = library["mp3"].read_bytes()
    dry = T.LibraryTags(compare=True, write_k=2, dry_run=True)
    failures = dry.apply([dict(r) for r in records])
    assert library["mp3"].read_bytes() == data and dry.columns == ["tag", "tag_written"]
    assert [p for p, _ in failures] == [str(library["webm"])]
    real = T.LibraryTags(compare=True, write_k=1, undo_log=tmp_path / "undo.jsonl")
    done = [dict(r) for r in records]
    real.apply(done)
    real.close()
    assert [(r["tag"], r["tag_written"]) for r in done] == [("Jazz", "rock"), ("", "rock"), ("", "")]
    assert T.read_genres(library["mp3"]) == ["rock"] and len((tmp_path / "undo.jsonl").read_text().splitlines()) == 2
