"""workbench/hf_data.py: recordings from datasets built offline (Dataset.from_dict + cast_column +
save_to_disk, and an audiofolder), decoded by decoding.py without torchcodec."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

import decoding as D  # noqa: E402
from workbench import hf_data as H  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_library import make_library  # noqa: E402

SR = 22050
GENRES = ("blues", "rock")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """{genre: [paths]}: a WAV, an M4A and a FLAC per genre (1 s each)."""
    lib = make_library(tmp_path_factory.mktemp("clips"), seconds=1.0, formats=("wav", "aac", "flac"))
    return {g: [shutil.copy(p, p.with_name(f"{g}_{p.name}")) for p in lib.values()] for g in GENRES}


@pytest.fixture(scope="module")
def saved(clips, tmp_path_factory):
    """A DatasetDict saved to disk: audio paths cast to Audio, ClassLabel genres, train/test."""
    def part(index):
        paths = [str(clips[g][i]) for g in GENRES for i in index]
        genres = [k for k, g in enumerate(GENRES) for _ in index]
        features = datasets.Features({"file": datasets.Value("string"),
                                      "genre": datasets.ClassLabel(names=list(GENRES))})
        ds = datasets.Dataset.from_dict({"file": paths, "genre": genres}, features=features)
        return ds.add_column("song", paths).cast_column("song", datasets.Audio(decode=False))
    folder = tmp_path_factory.mktemp("saved") / "ds"
    datasets.DatasetDict({"train": part([0, 1]), "test": part([2])}).save_to_disk(str(folder))
    return folder


def test_save_to_disk_folder(saved, clips):
    loaded = H.load_audio_dataset(saved)
    assert (loaded.audio_column, loaded.label_column, loaded.label_names) == ("song", "genre", list(GENRES))
    got = list(H.iter_recordings(loaded, SR))
    assert [r.label for r in got] == ["blues", "blues", "rock", "rock", "blues", "rock"]
    assert got[0].recording_id == "train/blues_wav.wav" and got[-1].recording_id == "test/rock_flac.flac"
    want = {Path(p).name: D.decode_audio(p, SR) for g in GENRES for p in clips[g]}
    for rec in got:
        np.testing.assert_array_equal(rec.waveform, want[rec.recording_id.split("/")[1]])
        assert rec.sr == SR
    test_only = H.load_audio_dataset(saved, split="test", audio_column="song", label_column="genre")
    assert [rec for rec, _ in H.rows(test_only)] == ["test/blues_flac.flac", "test/rock_flac.flac"]
    assert len(H.rows(H.load_audio_dataset(saved, split="train+test"))) == 6


def test_bytes_are_decoded_in_memory(clips, tmp_path):
    """A dataset holding the files' bytes (as the Hub's parquet files do), paths gone."""
    paths = [p for g in GENRES for p in clips[g]]
    cells = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in paths]
    ds = datasets.Dataset.from_dict({"audio": cells, "label": [g for g in GENRES for _ in clips[g]]})
    ds.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(tmp_path / "embedded"))
    for p in paths:
        Path(p).rename(Path(p).with_suffix(".moved"))  # bytes only: the files are gone
    try:
        loaded = H.load_audio_dataset(tmp_path / "embedded")
        assert loaded.label_names is None  # a column of strings
        got = list(H.iter_recordings(loaded, SR))
        assert [r.label for r in got] == [g for g in GENRES for _ in clips[g]] and all(len(r.waveform) > 0 for r in got)
    finally:
        for p in paths:
            Path(p).with_suffix(".moved").rename(p)


def test_audiofolder(clips, tmp_path):
    root = tmp_path / "af"
    for split, index in (("train", [0, 1]), ("test", [2])):
        for g in GENRES:
            (root / split / g).mkdir(parents=True)
            for i in index:
                shutil.copy(clips[g][i], root / split / g)
    (root / "train" / "notes.txt").write_text("not audio")
    loaded = H.load_audio_dataset(root)
    assert loaded.label_names == list(GENRES)
    assert sorted(set(loaded.splits)) == ["test", "train"]
    recs = list(H.iter_recordings(loaded, SR))
    assert len(recs) == 6 and {r.label for r in recs} == set(GENRES)
    assert {r.recording_id for r in recs if r.recording_id.startswith("test/")} == {
        "test/blues_flac.flac", "test/rock_flac.flac"}
    flat = tmp_path / "flat"
    shutil.copytree(root / "train", flat)
    assert len(H.rows(H.load_audio_dataset(flat, split="train"))) == 4


def test_errors_name_what_there_is(saved, tmp_path):
    with pytest.raises(H.DatasetError, match=r"no split valid \(has train, test\)"):
        H.load_audio_dataset(saved, split="valid")
    with pytest.raises(H.DatasetError, match=r"no column 'style' \(columns: file, genre, song\)"):
        H.load_audio_dataset(saved, label_column="style")
    with pytest.raises(H.DatasetError, match=r"no such folder"):
        H.load_audio_dataset(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    (bad / "blues").mkdir(parents=True)
    (bad / "blues" / "x.wav").write_bytes(b"junk" * 100)
    errors = []
    assert list(H.iter_recordings(H.load_audio_dataset(bad), SR, errors=errors)) == []
    assert errors[0][0] == "train/x.wav" and "not an audio file" in errors[0][1]


def test_hub_ids_go_to_load_dataset(monkeypatch, saved):
    seen = {}

    def fake_load_dataset(name, **kwargs):
        seen.update(name=name, **kwargs)
        return datasets.load_from_disk(str(saved))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = H.load_audio_dataset("marsyas/gtzan", split="test", cache_dir="/tmp/nowhere")
    assert seen == {"name": "marsyas/gtzan", "cache_dir": "/tmp/nowhere"} and len(H.rows(loaded)) == 2
