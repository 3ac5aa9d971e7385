"""Bad input and faults of issue 23 that belong to the model specs, the exporter, train.py's folders and
the model API: each reproduction failed before its fix."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import classify
import upload_to_hub
from configuration import MusicGenreMoEConfig
from modeling import MusicGenreMoE
from workbench import runs
from workbench.settings import SettingsError
from workbench.synth import generate_clip

ROOT = Path(__file__).resolve().parents[1]
SR = 22050


def song(tmp_path, name="song.wav", genre="rock", seconds=6.0, seed=0):
    path = tmp_path / name
    sf.write(path, generate_clip(genre, np.random.default_rng(seed), duration=seconds), SR)
    return path


# -- row 3: a local file published through a symlink ------------------------------------------------


def test_a_symlink_in_the_run_folder_is_never_exported(quick_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run, symlinks=True)
    (run / "roc_curves.png").unlink()
    (run / "roc_curves.png").symlink_to("/etc/passwd")
    out = tmp_path / "export"
    assert upload_to_hub.main(["--run", str(run), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "roc_curves.png" in err and "symbolic link" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# -- row 4: code run without asking ---------------------------------------------------------------------


def _evil_copy(quick_run, tmp_path, model_type=None):
    folder = tmp_path / "evil_model"
    shutil.copytree(quick_run / "hf_model", folder)
    marker = tmp_path / "evil_ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from .modeling import MusicGenreMoE as Evil\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {k: "evil.Evil" for k in config["auto_map"]}
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_a_models_own_code_never_runs_unasked(quick_run, tmp_path):
    folder, marker = _evil_copy(quick_run, tmp_path)
    out = tmp_path / "tags.csv"
    assert classify.main([str(song(tmp_path)), "--model", str(folder), "--out", str(out), "--n-jobs", "1",
                          "--no-progress"]) == 0
    assert not marker.exists()  # this project's model type: loaded with the local classes
    model = runs.load_model(str(folder))
    assert type(model).__module__ == MusicGenreMoE.__module__ and not marker.exists()


def test_a_foreign_model_type_needs_trust_remote_code(quick_run, tmp_path, capsys):
    folder, marker = _evil_copy(quick_run, tmp_path, model_type="someone-elses-model")
    code = classify.main([str(song(tmp_path)), "--model", str(folder), "--out", str(tmp_path / "t.csv"),
                          "--n-jobs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--trust-remote-code" in err and "someone-elses-model" in err
    assert not marker.exists()


# -- row 8: a data folder poisoned by its own run -------------------------------------------------------


def test_a_run_inside_the_data_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    for genre in ("rock", "jazz"):
        for i in range(3):
            (data / genre).mkdir(parents=True, exist_ok=True)
            song(data / genre, f"{genre}{i}.wav", genre=genre, seconds=3.0, seed=i)
    with pytest.raises(SettingsError, match="inside --data-dir"):
        runs.check_out(data / "run", False, [str(data)])
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-dir", str(data), "--out", str(data / "run")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "inside --data-dir" in r.stderr and not (data / "run").exists()


# -- row 11: unclear errors of the model API -------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    genres = ["jazz", "rock"]
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)})
    model = MusicGenreMoE(config)
    model.set_feature_stats(np.zeros(59), np.ones(59) * 1e3)
    return model.eval()


def test_predict_audio_names_what_it_expected(small_model, tmp_path):
    a, b = song(tmp_path, "a.wav"), song(tmp_path, "b.wav", seed=1)
    with pytest.raises(TypeError, match="one song"):
        small_model.predict_audio([str(a), str(b)])
    for bad in (float("nan"), float("inf"), -8000, 22050.5, "fast"):
        with pytest.raises(ValueError, match="sampling_rate: expected a positive integer"):
            small_model.predict_audio(np.zeros(SR, np.float32) + 0.1, sampling_rate=bad)
    from_bytes = small_model.predict_audio(a.read_bytes())
    assert from_bytes["probabilities"] == pytest.approx(small_model.predict_audio(str(a))["probabilities"], abs=1e-6)


def test_a_two_genre_model_tags_with_the_default_top_k(small_model, tmp_path):
    small_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "tags.csv"
    assert classify.main([str(song(tmp_path)), "--model", str(tmp_path / "model"), "--out", str(out), "--n-jobs", "1",
                          "--no-progress"]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert sum(1 for h in header if h.startswith("top")) >= 2
    assert math.isfinite(float(out.read_text().splitlines()[1].split(",")[2]))
