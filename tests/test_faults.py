"""Issue 12, "Stale or wrong results published": bad flags, bad data folders and killed processes.

Each refusal must come before any feature extraction, as one line naming the input and the
problem; a run folder must describe one whole run; nothing published may hold NaN or a path of
this machine. Feature extraction is replaced by a fast stand-in (`fake_extract_many`: band
energies of the waveform) wherever a test needs a finished run, so the training and writing code
runs for real in seconds.
"""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import atomic_files  # noqa: E402
import train  # noqa: E402
from workbench import data, runs, settings, training  # noqa: E402
import upload_to_hub  # noqa: E402
from workbench.batch import ExtractionResult  # noqa: E402

SR = 22050
FAST = ["--quick", "--n-per-genre", "8", "--epochs", "3", "--patience", "3", "--cache-dir", "none", "--n-jobs", "1",
        "--frontend", "none", "--clip-seconds", "5"]  # the fake extraction below computes the 59 features only


def _band_features(y):
    spec = np.abs(np.fft.rfft(np.asarray(y[:8192], dtype=np.float64), n=8192))
    bands = np.array_split(spec, 59)
    return np.log1p([b.mean() for b in bands]).astype(np.float32)


def fake_extract_many(sources, *, sr=SR, clip_seconds=None, **_):
    """extract_many's contract, fast: one row per source (per window with clip_seconds), failures listed."""
    result = ExtractionResult()
    for i, src in enumerate(sources):
        if isinstance(src, np.ndarray):
            y = src
        else:
            try:
                y, _ = sf.read(str(src), dtype="float32")
            except Exception as e:  # the real one names the file in its message too
                result.failures.append((str(src), f"{src}: cannot decode ({type(e).__name__})"))
                continue
        n = 1 if clip_seconds is None else max(1, int(len(y) // (clip_seconds * sr)))
        step = max(1, len(y) // n)
        result.features.append(np.stack([_band_features(y[k * step:(k + 1) * step]) for k in range(n)]))
        result.ok.append(i)
    return result


def no_extraction(*args, **kwargs):
    raise AssertionError("feature extraction started before the inputs were checked")


@pytest.fixture
def refuse_extraction(monkeypatch):
    monkeypatch.setattr(data, "extract_many", no_extraction)


@pytest.fixture
def fast_extraction(monkeypatch):
    monkeypatch.setattr(data, "extract_many", fake_extract_many)


def quiet(*_, **__):
    pass


def make_folder(root, counts, seconds=1.2):
    """root/<genre>/<genre>_<i>.wav recordings: counts = {genre: number of recordings}."""
    rng = np.random.default_rng(0)
    for g, n in counts.items():
        (root / g).mkdir(parents=True, exist_ok=True)
        f0 = 200 + 300 * list(counts).index(g)
        for i in range(n):
            t = np.arange(int(seconds * SR)) / SR
            y = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.01 * i) * t) + 0.01 * rng.standard_normal(len(t))
            sf.write(root / g / f"{g}_{i}.wav", y.astype(np.float32), SR)
    return root


def cli(args, **kw):
    """train.py as a user runs it: (returncode, stderr lines)."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=kw.get("cwd", ROOT),
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stderr.strip().splitlines()


def partials(folder, kind):
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(f".{kind}-partial-")]


# -- flags --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--ema-decay", "1"], "--ema-decay"),
    (["--split", "120,0,30"], "--split"),
    (["--split", "1,2"], "--split"),
    (["--seed", "-1"], "--seed"),
    (["--clip-seconds", "0"], "--clip-seconds"),
    (["--label-smoothing", "1.5"], "--label-smoothing"),
    (["--gate-hidden-sizes", "64,0"], "--gate-hidden-sizes"),
    (["--n-jobs", "0"], "--n-jobs"),
    (["--expert-type", "kann"], "invalid choice"),
])
def test_out_of_range_flags_are_one_line_errors(args, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        settings.parse_settings(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "error" in err[0], err


def test_help_gives_each_flag_a_sentence_choices_and_unit():
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    flags = [f.name for f in dataclasses.fields(settings.TrainSettings) if f.name != "model"]
    flags += list(settings.MODEL_FLAGS)
    for name in flags:
        flag = "--" + name.replace("_", "-")
        at = re.search(re.escape(flag) + r"[ ,]", text[text.index("options:"):]).start() + text.index("options:")
        entry = text[at:at + 400]
        assert "Default:" in entry and "." in entry.split("Default:")[0], (flag, entry)
    assert "Choices: mlp, kan" in text
    for unit in ("Unit: epochs", "Unit: seconds", "Unit: rows", "Unit: path"):
        assert unit in text, unit


def test_out_naming_a_file_is_refused_before_extraction(tmp_path, refuse_extraction):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(settings.SettingsError, match="is a file"):
        train.main(["--out", str(target), *FAST], log=quiet)
    assert target.read_text() == "mine"
    code, err = cli(["--out", str(target / "run"), *FAST])
    assert code == 1 and len(err) == 1 and "is a file" in err[0] and "Traceback" not in err[0], err


def test_existing_run_is_refused_without_overwrite(tmp_path, refuse_extraction):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(settings.SettingsError, match="--overwrite"):
        train.main(["--out", str(out), *FAST], log=quiet)
    assert (out / "metrics.json").read_text() == "{}"


@pytest.mark.parametrize("args, fragment", [
    (["--genres", "jazz"], "at least 2 genres"),
    (["--n-per-genre", "2"], "needs at least 3"),
    (["--genres", "jazz,nope"], "not found"),
    (["--num-experts-per-tok", "9"], "num_experts_per_tok"),
])
def test_synthetic_data_that_cannot_make_a_run_is_refused_up_front(args, fragment, tmp_path, refuse_extraction):
    with pytest.raises(settings.SettingsError, match=fragment):
        train.main(["--out", str(tmp_path / "run"), *FAST, *args], log=quiet)
    assert not (tmp_path / "run").exists() and partials(tmp_path, "run") == []


def test_data_folders_that_cannot_make_a_run_are_refused_up_front(tmp_path, refuse_extraction):
    def refused(folder, fragment):
        with pytest.raises((settings.SettingsError, FileNotFoundError)) as e:
            train.main(["--data-dir", str(folder), "--out", str(tmp_path / "run"), *FAST], log=quiet)
        message = str(e.value)
        assert fragment in message and "\n" not in message, message
        return message

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "DIR/<genre>/<audio files>" in refused(empty, "has no genre sub-folders")
    flat = tmp_path / "flat"
    make_folder(flat, {"x": 2})
    for f in (flat / "x").iterdir():
        f.rename(flat / f.name)
    (flat / "x").rmdir()
    assert "DIR/<genre>/<audio files>" in refused(flat, "2 audio files but no genre sub-folders")
    refused(tmp_path / "missing", "does not exist")
    one = make_folder(tmp_path / "one", {"rock": 4})
    refused(one, "at least 2 genres")
    short = make_folder(tmp_path / "short", {"rock": 4, "jazz": 1})
    assert "at least 3 recordings per genre" in refused(short, "jazz has 1")
    assert not (tmp_path / "run").exists()


# -- a finished run -------------------------------------------------------------------------------------


def test_overwrite_replaces_the_whole_run(tmp_path, fast_extraction):
    out = tmp_path / "run"
    out.mkdir()
    (out / "radar_charts.png").write_bytes(b"a figure of a previous run")
    metrics = train.main(["--out", str(out), "--overwrite", "--no-plots", *FAST], log=quiet)
    names = {p.name for p in out.iterdir()}
    assert "radar_charts.png" not in names and "metrics.json" in names
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert partials(tmp_path, "run") == []


def test_out_filled_during_training_keeps_both(tmp_path, fast_extraction, monkeypatch):
    out = tmp_path / "run"
    real = runs.train_and_write

    def meanwhile(*a, **k):
        m = real(*a, **k)
        out.mkdir()
        (out / "theirs.txt").write_text("another run's file")
        return m

    monkeypatch.setattr(runs, "train_and_write", meanwhile)
    with pytest.raises(settings.SettingsError, match="kept in") as e:
        train.main(["--out", str(out), "--no-plots", *FAST], log=quiet)
    kept = Path(str(e.value).rsplit("kept in ", 1)[1])
    assert (kept / "metrics.json").is_file() and (out / "theirs.txt").read_text() == "another run's file"
    assert partials(tmp_path, "run") == []


def test_nan_metric_is_an_error_naming_it_and_nothing_is_written(tmp_path, fast_extraction, monkeypatch):
    real = training.evaluation.classification_metrics

    def with_nan(*a, **k):
        m = real(*a, **k)
        m["macro_f1"] = float("nan")
        return m

    monkeypatch.setattr(training.evaluation, "classification_metrics", with_nan)
    with pytest.raises(ValueError, match="macro_f1"):
        train.main(["--out", str(tmp_path / "run"), "--no-plots", *FAST], log=quiet)
    assert not (tmp_path / "run").exists() and partials(tmp_path, "run") == []


def test_data_dir_run_publishes_no_path_of_this_machine(tmp_path, fast_extraction):
    data = make_folder(tmp_path / "my-recordings", {"rock": 4, "jazz": 4, "pop": 3})
    (data / "rock" / "broken.wav").write_bytes(b"\x00not audio" * 100)
    out = tmp_path / "out" / "run"
    train.main(["--data-dir", str(data), "--out", str(out), "--no-plots", *FAST], log=quiet)
    text = (out / "metrics.json").read_text()
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text
    metrics = json.loads(text)
    assert metrics["dataset"]["name"] == "my-recordings"
    assert [p for p, _ in metrics["dataset"]["skipped"]] == ["rock/broken.wav"]
    assert metrics["train_args"]["data_dir"] == ["my-recordings"] and "out" not in metrics["train_args"]


def test_checkpoint_reads_with_weights_only(tmp_path, fast_extraction):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--no-plots", *FAST], log=quiet)
    ckpt = torch.load(out / "moe_genre_checkpoint.pt", map_location="cpu", weights_only=True)
    assert isinstance(ckpt["feat_mean"], torch.Tensor) and isinstance(ckpt["feat_std"], torch.Tensor)
    assert type(ckpt["config"]) is dict and type(ckpt["train_args"]) is dict
    assert ckpt["genres"] == json.loads((out / "metrics.json").read_text())["dataset"]["genres"]


def test_a_failed_save_leaves_no_truncated_file(tmp_path, monkeypatch):
    """torch.save dying half-way (disk full, kill) must not leave a half checkpoint under its real name."""
    from configuration import MusicGenreMoEConfig
    from modeling import MusicGenreMoE

    genres = ["a", "b"]
    model = MusicGenreMoE(MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={"a": 0, "b": 1},
                                              feature_mean=[0.0] * 59, feature_std=[1.0] * 59))
    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    s = settings.parse_settings([])
    with pytest.raises(OSError):
        runs.save_run(tmp_path, model, s, {"test_accuracy": 1.0}, {}, np.zeros(59), np.ones(59), genres)
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_files.write_json(path, {"a": 1.0})
    with pytest.raises(ValueError, match=r"per_genre\.jazz\.roc_auc is nan"):
        atomic_files.write_json(path, {"per_genre": {"jazz": {"roc_auc": math.nan}}})
    assert json.loads(path.read_text()) == {"a": 1.0} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.figure
    from workbench import plots

    path = tmp_path / "confusion_matrix.png"
    path.write_bytes(b"old figure")

    def broken_savefig(self, fname, *a, **k):
        Path(fname).write_bytes(b"\x89PNG half")
        raise RuntimeError("renderer died")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        plots.confusion_matrix([[1, 0], [0, 1]], ["a", "b"], path)
    assert path.read_bytes() == b"old figure" and [p.name for p in tmp_path.iterdir()] == [path.name]


# -- killed processes -----------------------------------------------------------------------------------


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_killed_training_leaves_no_half_run_and_the_next_run_cleans_up(tmp_path, fast_extraction):
    out = tmp_path / "run"
    script = tmp_path / "slow_run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
        import train, test_faults
        from workbench import data
        data.extract_many = test_faults.fake_extract_many
        train.main(["--out", {str(out)!r}, "--quick", "--n-per-genre", "8", "--epochs", "100000", "--patience",
                    "100000", "--cache-dir", "none", "--n-jobs", "1"], log=lambda *a: print(*a, flush=True))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        for line in proc.stdout:  # killed while training, its partial run folder open
            if line.startswith("epoch"):
                break
        assert partials(tmp_path, "run"), "the run is not being built aside"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    stale = partials(tmp_path, "run")
    assert stale
    live = tmp_path / f".run-partial-other-{os.getpid()}-abc"  # a run still going: left alone
    live.mkdir()
    train.main(["--out", str(out), "--no-plots", *FAST], log=quiet)
    assert (out / "metrics.json").is_file()
    assert partials(tmp_path, "run") == [live.name]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(data, "extract_many", fake_extract_many)
    try:
        out = tmp_path_factory.mktemp("finished") / "run"
        train.main(["--out", str(out), *FAST], log=quiet)
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("where", ["under_a_file", "unwritable"])
def test_export_to_an_unusable_output_dir_is_one_line(finished_run, tmp_path, where, capsys):
    if where == "under_a_file":
        (tmp_path / "afile").write_text("x")
        target, fragment = tmp_path / "afile" / "export", "is a file"
    else:
        target, fragment = Path("/proc/no-such-place/export"), "cannot write there"
    assert upload_to_hub.main(["--run", str(finished_run), "--output-dir", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and str(target) in err[0], err


def test_stale_partial_exports_are_cleaned_on_the_next_export(finished_run, tmp_path):
    stale = tmp_path / f".out-partial-export-{_dead_pid()}-x1y2"  # what a SIGKILLed export leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".out-partial-other-{os.getpid()}-z9"
    live.mkdir()
    assert upload_to_hub.main(["--run", str(finished_run), "--output-dir", str(tmp_path / "export")]) == 0
    assert not stale.exists() and live.exists()
    assert (tmp_path / "export" / "README.md").is_file()


def test_killed_export_leaves_only_a_hidden_partial_folder(finished_run, tmp_path):
    target = tmp_path / "export"
    proc = subprocess.Popen([sys.executable, str(ROOT / "upload_to_hub.py"), "--run", str(finished_run),
                             "--output-dir", str(target)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not partials(tmp_path, "out") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if target.exists():  # the export won the race: nothing to check about a kill
        pytest.skip("the export finished before it could be killed")
    assert partials(tmp_path, "out")
    assert upload_to_hub.main(["--run", str(finished_run), "--output-dir", str(target)]) == 0
    assert partials(tmp_path, "out") == []


def test_nan_in_metrics_json_is_refused_by_the_export(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["per_genre"][next(iter(metrics["per_genre"]))]["roc_auc"] = float("nan")
    (run / "metrics.json").write_text(json.dumps(metrics))  # an old run's file: json.dumps allowed NaN
    assert upload_to_hub.main(["--run", str(run), "--output-dir", str(tmp_path / "export")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "roc_auc" in err[0] and "nan" in err[0].lower(), err
    assert not (tmp_path / "export").exists()
