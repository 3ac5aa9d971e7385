"""classify.py on a library in every container, with its genre tags: --compare-tags, --write-tags
(dry run, real, resumed), the errors file for untaggable files, and --restore."""

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import classify
import decoding as D
from workbench import tags as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_library import make_library  # noqa: E402
from test_tags import set_native  # noqa: E402

FORMATS = ("mp3", "flac", "vorbis", "aac", "alac", "wma", "video", "webm")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("lib_originals"), seconds=2.0, formats=FORMATS)


@pytest.fixture
def library(originals, tmp_path):
    folder = tmp_path / "Music"
    folder.mkdir()
    lib = {n: Path(shutil.copy(p, folder / p.name)) for n, p in originals.items()}
    set_native(lib["mp3"], ["Hip-Hop"], title="One")
    set_native(lib["aac"], ["Jazz"], title="Two")
    set_native(lib["wma"], ["Rock"])
    return folder, lib


def run(*args):
    return classify.main([*map(str, args), "--no-progress", "--n-jobs", "1"])


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_compare_tags(library, quick_run, tmp_path, capsys):
    folder, lib = library
    out = tmp_path / "tags.csv"
    assert run(folder, "--model", quick_run, "--out", out, "--compare-tags", "--min-confidence", "0") == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert len(rows) == len(FORMATS)  # every container decodes, M4A, WMA and video included
    assert rows["mp3.mp3"]["tag"] == "Hip-Hop" and rows["aac.m4a"]["tag"] == "Jazz" and rows["flac.flac"]["tag"] == ""
    mislabelled = read_csv(out.with_name("tags.csv.mislabelled.csv"))
    tagged = {"mp3.mp3", "aac.m4a", "wma.wma"}
    # none of the quick model's synthetic genres is hiphop; jazz and rock may be predicted
    want = [n for n in tagged if T.normalise_genre(rows[n]["genre"]) != T.normalise_genre(rows[n]["tag"])]
    assert sorted(Path(r["path"]).name for r in mislabelled) == sorted(want) and "mp3.mp3" in want
    confidences = [float(r["confidence"]) for r in mislabelled]
    assert confidences == sorted(confidences, reverse=True)
    assert "songs whose tag a prediction of confidence >= 0 contradicts" in capsys.readouterr().out


def test_write_tags_dry_run_real_resume_restore(library, quick_run, tmp_path, capsys):
    folder, lib = library
    out = tmp_path / "tags.csv"
    before_bytes = {n: p.read_bytes() for n, p in lib.items()}
    before_audio = {n: D.decode_audio(p, 22050) for n, p in lib.items()}
    before_tags = {n: T._stored(T._open(p).tags) for n, p in lib.items() if n != "webm"}
    lib["flac"].chmod(0o444)

    assert run(folder, "--model", quick_run, "--out", out, "--write-tags", "2", "--dry-run") == 0
    assert all(p.read_bytes() == before_bytes[n] for n, p in lib.items())
    assert not out.with_name("tags.csv.undo.jsonl").exists()
    dry = {Path(r["path"]).name: r for r in read_csv(out)}
    assert dry["mp3.mp3"]["tag_written"] == f"{dry['mp3.mp3']['top1']}; {dry['mp3.mp3']['top2']}"

    assert run(folder, "--model", quick_run, "--out", out, "--write-tags", "2", "--overwrite") == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    for name, path in lib.items():
        np.testing.assert_array_equal(D.decode_audio(path, 22050), before_audio[name])  # audio untouched
        if name not in ("webm", "flac"):
            assert T.read_genres(path) == [rows[path.name]["top1"], rows[path.name]["top2"]], name
    errors = {Path(r["path"]).name: r["reason"] for r in read_csv(out.with_name("tags.csv.errors.csv"))}
    assert "unsupported container for genre tags" in errors["webm.webm"]
    assert "read-only file" in errors["flac.flac"]
    assert T.read_genres(lib["flac"]) == []
    undo = out.with_name("tags.csv.undo.jsonl")
    n_logged = len(undo.read_text().splitlines())
    assert n_logged == len(FORMATS) - 2

    assert run(folder, "--model", quick_run, "--out", out, "--write-tags", "2") == 0  # resumed: nothing to do
    assert len(undo.read_text().splitlines()) == n_logged

    capsys.readouterr()
    assert classify.main(["--restore", str(undo)]) == 0
    assert f"{n_logged} restored" in capsys.readouterr().out
    for name, path in lib.items():
        if name != "webm":
            assert T._stored(T._open(path).tags) == before_tags[name], name
        np.testing.assert_array_equal(D.decode_audio(path, 22050), before_audio[name])
    assert classify.main(["--restore", str(tmp_path / "missing.jsonl")]) == 2


def test_tag_flags_are_checked(tmp_path, quick_run, capsys):
    song = tmp_path / "a.wav"
    shutil.copy(make_library(tmp_path / "l", seconds=1.0, formats=("wav",))["wav"], song)
    for flags, message in ((["--dry-run"], "--dry-run: only used with --write-tags"),
                           (["--write-tags", "0", "--undo-log", "u"], "--undo-log: only used with --write-tags"),
                           (["--compare-tags", "--min-confidence", "2"], "--min-confidence 2.0: expected"),
                           (["--write-tags", "99"], "--write-tags 99: the model has only")):
        assert run(song, "--model", quick_run, "--out", tmp_path / "o.csv", *flags) == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tagged_library(tmp_path_factory):
    """Nine 6-s M4A songs of three synthetic genres, labelled only by their tags (flat folder),
    plus an untagged FLAC; and the same songs as a save_to_disk dataset holding their bytes."""
    import datasets
    from workbench import synth
    from audio_library import write_with_pyav

    root = tmp_path_factory.mktemp("tagged")
    rng = np.random.default_rng(0)
    files, names = [], []
    for genre, tag, n in (("rock", "Rock", 4), ("classical", "Classical", 4), ("jazz", "Jazz", 1)):
        for i in range(n):
            y = synth.generate_clip(genre, rng, duration=6.0)
            path = root / f"{genre}{i}.m4a"
            write_with_pyav(path, np.round(np.stack([y, y], 1) * 32767).astype(np.int16), 22050, "aac", "ipod")
            T.write_genres(path, [tag.upper() if i % 2 else tag])
            files.append(path)
            names.append(genre)
    import soundfile as sf
    sf.write(root / "untagged.flac", np.stack([y, y], 1), 22050)
    genres = sorted(set(names))
    # from_dict with an Audio feature would encode through torchcodec: a struct, then cast (no decoding)
    features = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "genre": datasets.ClassLabel(names=genres)})
    cells = [{"bytes": f.read_bytes(), "path": f.name} for f in files]
    ds = datasets.Dataset.from_dict({"audio": cells, "genre": [genres.index(g) for g in names]}, features=features)
    ds.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(root.parent / "tagged_ds"))
    return root, root.parent / "tagged_ds"


def test_train_labels_from_tags(tagged_library, capsys):
    from workbench import data, settings

    root, _ = tagged_library
    s = settings.parse_settings(["--data-dir", str(root), "--labels", "tags", "--genres", "Rock,classical"])
    genres, paths, labels = data.list_data(s)
    assert genres == ["rock", "classical"] and sorted(labels.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(("rock" in p.name) == (l == 0) for p, l in zip(paths, labels))
    err = capsys.readouterr().err
    assert "2 of 10 recordings skipped" in err and "genre jazz not among rock, classical" in err
    assert "untagged.flac: no genre tag" in err
    with pytest.raises(settings.SettingsError, match=r"genre jazz has fewer than 3 songs \(songs per genre: "
                                                     r"classical 4, rock 4, jazz 1\)"):
        data.list_data(settings.parse_settings(["--data-dir", str(root), "--labels", "tags"]))


def test_train_from_a_dataset(tagged_library, tmp_path):
    import json

    import train
    from workbench import settings

    _, saved = tagged_library
    out = tmp_path / "run"
    train.main(["--dataset", str(saved), "--genres", "rock,classical", "--epochs", "1", "--no-plots",
                "--frontend", "none", "--out", str(out), "--cache-dir", "none", "--n-jobs", "1"], log=lambda *a, **k: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["source"] == "dataset" and metrics["dataset"]["genres"] == ["rock", "classical"]
    assert metrics["dataset"]["n_tracks"] == [4, 2, 2] and metrics["train_args"]["dataset"] == "tagged_ds"
    with pytest.raises(settings.SettingsError, match=r"only used with --dataset"):
        train.main(["--label-column", "genre", "--out", str(tmp_path / "x")], log=lambda *a, **k: None)
    with pytest.raises(settings.SettingsError, match=r"has one split \(train\), not .valid."):
        train.main(["--dataset", str(saved), "--dataset-split", "valid", "--out", str(tmp_path / "y")],
                   log=lambda *a, **k: None)
