"""Bad input and faults of issue 23 that belong to classify.py's outputs, the worker pool, train.py's data
folders and the two doors of the model API: each reproduction failed before its fix."""

import csv
import errno
import json
import os
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

import classify
from configuration import MusicGenreMoEConfig
from modeling import MusicGenreMoE
from workbench import tagging
from workbench.synth import generate_clip

ROOT = Path(__file__).resolve().parents[1]
SR = 22050
GENRES = ["jazz", "rock"]


def song(folder, name="song.wav", genre="rock", seconds=6.0, seed=0):
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, generate_clip(genre, np.random.default_rng(seed), duration=seconds), SR)
    return path


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(GENRES)), label2id={g: i for i, g in enumerate(GENRES)})
    model = MusicGenreMoE(config)
    model.set_feature_stats(np.zeros(59), np.ones(59) * 1e3)
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(small_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    small_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    for i in range(4):
        song(root, f"s{i}.wav", genre=GENRES[i % 2], seconds=5.0 + i, seed=i)
    return root


def classify_run(args, capsys=None):
    code = classify.main([*map(str, args), "--no-progress", "--n-jobs", "1"])
    return (code, capsys.readouterr()) if capsys else code


def data_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


# -- row 1: a user's file that is not this tool's output is refused before a byte of it changes ------------


@pytest.mark.parametrize("flag,content", [
    ("--out", b"a\nb"),                                    # a text file with a "torn" last line
    ("--out", b"path,other,columns\nx,y,z\nhalf"),          # another CSV
    ("--out", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x44\xac\x00\x00\x88"
              b"\x58\x01\x00\x02\x00\x10\x00data\x00\x00\x00\x00\xff\xfe"),  # a WAV
    ("--errors", b"notes\nmore notes"),
    ("--jsonl", b"my diary\nday two"),
    ("--jsonl", b'{"a": 1}\n{"b": 2'),
])
def test_a_file_that_is_not_an_output_is_refused_untouched(flag, content, library, model_dir, tmp_path, capsys):
    target = tmp_path / "mine.txt"
    target.write_bytes(content)
    args = [library, "--model", model_dir, "--out", tmp_path / "tags.csv" if flag != "--out" else target]
    if flag != "--out":
        args += [flag, target]
    code, cap = classify_run(args, capsys)
    assert code == 2, cap.err
    assert target.read_bytes() == content
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "not a classify.py" in lines[0], cap.err
    assert "Traceback" not in cap.err


def test_a_torn_line_of_an_own_output_is_still_dropped(library, model_dir, tmp_path, capsys):
    out = tmp_path / "tags.csv"
    assert classify_run([library, "--model", model_dir, "--out", out]) == 0
    full = out.read_bytes()
    lines = full.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # the last row torn
    capsys.readouterr()
    code, cap = classify_run([library, "--model", model_dir, "--out", out], capsys)
    assert code == 0 and "dropped an incomplete last line" in cap.err
    assert sorted(data_rows(out)) == sorted(list(csv.reader(full.decode().splitlines()))[1:])


# -- row 2: one run at a time per output -------------------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(library, model_dir, tmp_path, capsys):
    out = tmp_path / "tags.csv"
    holder = tagging.Outputs(out, tmp_path / "tags.csv.errors.csv", None, None, GENRES, 2)
    holder.open(overwrite=False, retry_errors=False)
    try:
        lock = json.loads((tmp_path / "tags.csv.lock").read_text())
        assert lock["pid"] == os.getpid() and lock["host"] and lock["started"]
        code, cap = classify_run([library, "--model", model_dir, "--out", out], capsys)
        assert code == 2
        line = cap.err.strip()
        assert "\n" not in line and "in use by classify.py pid" in line and str(os.getpid()) in line
    finally:
        holder.close()
    assert not (tmp_path / "tags.csv.lock").exists()
    assert data_rows(out) == []  # the refused run wrote nothing
    assert classify_run([library, "--model", model_dir, "--out", out]) == 0
    assert len(data_rows(out)) == 4 and not (tmp_path / "tags.csv.lock").exists()


def test_two_runs_started_together_give_one_row_per_song(library, model_dir, tmp_path):
    out = tmp_path / "tags.csv"
    cmd = [sys.executable, str(ROOT / "classify.py"), str(library), "--model", str(model_dir), "--out", str(out),
           "--n-jobs", "1", "--no-progress", "--chunk-size", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            assert "in use by classify.py pid" in err
    paths = [r[0] for r in data_rows(out)]
    assert sorted(paths) == sorted(set(paths)) and len(paths) == 4


def test_a_lock_left_by_a_dead_run_is_taken_over(library, model_dir, tmp_path):
    out = tmp_path / "tags.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "tags.csv.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename,
                                                         "started": "2026-01-01T00:00:00"}))
    assert classify_run([library, "--model", model_dir, "--out", out]) == 0
    assert len(data_rows(out)) == 4 and not (tmp_path / "tags.csv.lock").exists()


# -- row 6: a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_no_torn_line(library, model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tags.csv"
    real = tagging._append_bytes
    calls = {"n": 0}

    def full_after_one_batch(fh, data):
        calls["n"] += 1
        if calls["n"] > 1 and fh.name == str(out):
            fh.write(data[: len(data) // 2])  # half a batch reaches the disk, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, data)

    monkeypatch.setattr(tagging, "_append_bytes", full_after_one_batch)
    code, cap = classify_run([library, "--model", model_dir, "--out", out, "--chunk-size", "1"], capsys)
    assert code == 1
    err = [ln for ln in cap.err.strip().splitlines() if ln]
    assert len(err) == 1 and str(out) in err[0] and "No space left on device" in err[0], cap.err
    assert "Traceback" not in cap.err
    text = out.read_bytes()
    assert text.endswith(b"\n")
    written = data_rows(out)
    assert 1 <= len(written) < 4
    monkeypatch.setattr(tagging, "_append_bytes", real)
    code, cap = classify_run([library, "--model", model_dir, "--out", out], capsys)
    assert code == 0 and "dropped an incomplete" not in cap.err
    paths = [r[0] for r in data_rows(out)]
    assert len(paths) == 4 == len(set(paths))


# -- row 7: a file name holding a newline: the same outcome in every output ------------------------------


def _newline_library(tmp_path):
    lib = tmp_path / "lib"
    song(lib, "plain.wav")
    odd = song(lib, "two\nlines.wav", seed=1)
    return lib, odd


def _outcomes(tmp_path, odd):
    rows = data_rows(tmp_path / "tags.csv")
    errors = data_rows(tmp_path / "tags.csv.errors.csv")
    jsonl = [json.loads(line)["path"] for line in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert str(odd) not in [r[0] for r in rows] and str(odd) not in jsonl
    assert [r[0] for r in errors] == [str(odd)] and "line break" in errors[0][1]
    assert len(rows) == 1 and jsonl == [rows[0][0]]


def test_a_path_with_a_newline_is_only_in_the_errors_file(model_dir, tmp_path):
    lib, odd = _newline_library(tmp_path)
    args = [lib, "--model", model_dir, "--out", tmp_path / "tags.csv", "--jsonl", tmp_path / "w.jsonl"]
    assert classify_run(args) == 0
    _outcomes(tmp_path, odd)
    assert classify_run(args) == 0  # resume: nothing redone, nothing doubled
    _outcomes(tmp_path, odd)


def test_a_path_with_a_newline_on_ray_is_only_in_the_errors_file(model_dir, tmp_path):
    pytest.importorskip("ray")
    lib, odd = _newline_library(tmp_path)
    r = subprocess.run([sys.executable, str(ROOT / "classify.py"), str(lib), "--model", str(model_dir), "--out",
                        str(tmp_path / "tags.csv"), "--jsonl", str(tmp_path / "w.jsonl"), "--no-progress", "--ray",
                        "--ray-cpus", "1"], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    _outcomes(tmp_path, odd)


# -- row 13: no traceback from the worker pool's pipes at exit -------------------------------------------


def test_classify_with_an_export_folder_exits_without_a_traceback(small_model, tmp_path):
    lib = tmp_path / "lib"
    for i in range(6):
        song(lib, f"s{i}.wav", seconds=3.0, seed=i)
    export = tmp_path / "export"
    small_model.save_pretrained(export)
    for i in range(4):
        out = tmp_path / f"t{i}.csv"
        r = subprocess.run([sys.executable, str(ROOT / "classify.py"), str(lib), "--model", str(export), "--out",
                            str(out), "--n-jobs", "2", "--no-progress"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and "Bad file descriptor" not in r.stderr, r.stderr
        assert len(data_rows(out)) == 6


def test_the_worker_pool_is_joined_before_iter_extract_returns(tmp_path):
    """The cause of the flaky EBADF: shutdown(wait=False) left the executor's manager thread tearing
    down its pipes while the interpreter exited (and the executor's weakref callback wrote to them)."""
    import multiprocessing
    import threading

    from workbench.batch import iter_extract

    paths = [song(tmp_path, f"s{i}.wav", seconds=2.0, seed=i) for i in range(6)]
    for stop_early in (False, True):
        stream = iter_extract(paths, n_jobs=3, cache_dir=False)
        for n, item in enumerate(stream):
            assert item.error is None
            if stop_early and n == 1:
                stream.close()
                break
        assert multiprocessing.active_children() == []
        assert not [t for t in threading.enumerate() if "ExecutorManager" in type(t).__name__]


# -- row 14: the interrupted count is the rows added on disk ---------------------------------------------


def test_sigint_just_after_a_batch_reaches_the_disk_is_counted(library, model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tags.csv"
    real = tagging._append_bytes
    calls = {"n": 0}

    def interrupted_after_the_write(fh, data):
        real(fh, data)
        if fh.name == str(out):
            calls["n"] += 1
            if calls["n"] == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C lands right after the bytes

    monkeypatch.setattr(tagging, "_append_bytes", interrupted_after_the_write)
    code, cap = classify_run([library, "--model", model_dir, "--out", out, "--chunk-size", "1"], capsys)
    assert code == 130
    said = int(cap.err.split("interrupted: ")[1].split(" songs written")[0])
    assert said == len(data_rows(out)) == 2


def test_sigint_to_a_running_classify_reports_the_rows_on_disk(model_dir, tmp_path):
    lib = tmp_path / "lib"
    for i in range(30):
        song(lib, f"s{i:02d}.wav", seconds=3.0, seed=i)
    out = tmp_path / "tags.csv"
    p = subprocess.Popen([sys.executable, str(ROOT / "classify.py"), str(lib), "--model", str(model_dir), "--out",
                          str(out), "--n-jobs", "1", "--chunk-size", "1", "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and (not out.exists() or len(data_rows(out)) < 3):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("the run finished before the interrupt")
    assert p.returncode == 130, err
    said = int(err.split("interrupted: ")[1].split(" songs written")[0])
    assert said == len(data_rows(out))


# -- row 9: the same audio twice in the training data -------------------------------------------------


def _data_folder(tmp_path):
    data = tmp_path / "data"
    for g, genre in enumerate(("rock", "jazz")):
        for i in range(3):
            song(data / genre, f"{genre}{i}.wav", genre=genre, seconds=3.0, seed=10 * g + i)
    return data


def test_the_same_recording_in_two_genres_is_refused_by_content(tmp_path):
    from workbench.data import check_duplicates
    from workbench.settings import SettingsError, TrainSettings

    data = _data_folder(tmp_path)
    (data / "jazz" / "copy of rock0.wav").write_bytes((data / "rock" / "rock0.wav").read_bytes())
    (data / "rock" / "again.wav").write_bytes((data / "rock" / "rock1.wav").read_bytes())
    from workbench.data import list_recordings

    paths, labels, genres = list_recordings([str(data)])
    with pytest.raises(SettingsError) as e:
        check_duplicates(paths, labels, genres, TrainSettings(), f"--data-dir {data}")
    msg = str(e.value)
    assert "\n" not in msg and "2 recording(s) are the same audio" in msg and "1 in two genres, 1 twice in one" in msg
    assert "copy of rock0.wav (jazz)" in msg and "rock0.wav (rock)" in msg and "--allow-duplicates" in msg
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-dir", str(data), "--out", str(tmp_path / "run"),
                        "--cache-dir", "none", "--split", "1,1,1", "--epochs", "1", "--no-plots"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "same audio" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_allow_duplicates_turns_the_refusal_into_a_warning(tmp_path, capsys):
    from workbench.data import check_duplicates, list_recordings
    from workbench.settings import TrainSettings, parse_settings

    data = _data_folder(tmp_path)
    (data / "jazz" / "dup.wav").write_bytes((data / "rock" / "rock0.wav").read_bytes())
    paths, labels, genres = list_recordings([str(data)])
    s = parse_settings(["--data-dir", str(data), "--allow-duplicates"])
    assert s.allow_duplicates and not TrainSettings().allow_duplicates
    check_duplicates(paths, labels, genres, s, "--data-dir D")
    err = capsys.readouterr().err
    assert err.startswith("warning: --data-dir D: 1 recording(s) are the same audio") and "dup.wav (jazz)" in err


# -- row 10: a data folder of empty files ---------------------------------------------------------------


def test_a_folder_of_empty_files_gives_a_short_readable_error(tmp_path):
    data = tmp_path / "data"
    for genre in ("rock", "jazz"):
        (data / genre).mkdir(parents=True)
        for i in range(1000):
            (data / genre / f"{i:04d}.wav").write_bytes(b"")
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-dir", str(data), "--out", str(tmp_path / "run"),
                        "--cache-dir", "none", "--n-jobs", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    error = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(error) == 1, r.stderr[-2000:]
    line = error[0]
    assert len(line) < 1000 and "('" not in line and "2000 unreadable (2000 audio is empty (0-byte file))" in line, line
    assert line.count(str(data)) <= 5 and "jazz/0000.wav (audio is empty (0-byte file))" in line


# -- row 11 (rest): errors that name the file -----------------------------------------------------------


def test_a_half_second_file_is_named_in_the_error(small_model, tmp_path):
    from features import AudioError

    short = song(tmp_path, "short.wav", seconds=0.5)
    with pytest.raises(AudioError) as e:
        small_model.predict_audio(str(short))
    assert str(e.value).startswith(f"{short}: ") and "too short" in str(e.value) and "array" not in str(e.value)
    with pytest.raises(AudioError, match=r"^array: recording too short"):  # an array is still "array"
        small_model.predict_audio(np.zeros(SR // 2, np.float32) + 0.1, sampling_rate=SR)


def test_a_symlink_loop_says_so_like_classify(small_model, model_dir, tmp_path, capsys):
    from features import AudioError

    lib = tmp_path / "lib"
    song(lib, "good.wav")
    a, b = lib / "a.wav", lib / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(AudioError, match="(?i)too many levels of symbolic links") as e:
        small_model.predict_audio(str(a))
    assert str(e.value).lower() == f"{a}: cannot read file (too many levels of symbolic links)"
    with pytest.raises(AudioError, match="file not found"):
        small_model.predict_audio(str(tmp_path / "missing.wav"))
    assert classify_run([lib, "--model", model_dir, "--out", tmp_path / "t.csv"]) == 0
    errors = data_rows(tmp_path / "t.csv.errors.csv")
    assert [r[1].lower() for r in errors] == ["cannot read file (too many levels of symbolic links)"] * 2


# -- row 12: samples scaled by 1e30: the file door and the array door agree -------------------------------


def test_huge_samples_are_clipped_alike_through_a_file_and_an_array(small_model, tmp_path):
    y = generate_clip("rock", np.random.default_rng(0), duration=6.0).astype(np.float32) * np.float32(1e30)
    path = tmp_path / "loud.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    kept = y.copy()
    from_file = small_model.predict_audio(str(path))
    from_array = small_model.predict_audio(y, sampling_rate=SR)
    assert np.array_equal(y, kept)  # the caller's array is clipped into a copy
    assert from_array["predicted_genre"] == from_file["predicted_genre"]
    assert from_array["probabilities"] == pytest.approx(from_file["probabilities"], abs=1e-5)
    clipped = small_model.predict_audio(np.clip(y, -1, 1), sampling_rate=SR)
    assert from_array["probabilities"] == pytest.approx(clipped["probabilities"], abs=1e-6)
    from features import AudioError

    y[100] = np.inf
    sf.write(path, y, SR, subtype="FLOAT")
    for door in (lambda: small_model.predict_audio(str(path)), lambda: small_model.predict_audio(y, sampling_rate=SR)):
        with pytest.raises(AudioError, match="audio contains NaN or infinite samples"):
            door()


def test_a_full_disk_while_opening_the_outputs_is_one_line(library, model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tags.csv"

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(tagging, "write_bytes", full)
    code, cap = classify_run([library, "--model", model_dir, "--out", out], capsys)
    assert code == 1 and cap.err.strip() == f"classify.py: error: {out}: No space left on device", cap.err
    assert not (tmp_path / "tags.csv.lock").exists()


# -- a song that kills the Ray worker reading it ----------------------------------------------------------

_CRASH_HOOK = '''
import os


def install():  # Ray runs this in every worker process it starts (runtime_env worker_process_setup_hook)
    from workbench import batch

    extract = batch._extract_source

    def crash_on_deadly_files(source, *args):
        if "deadly" in str(source):
            os._exit(1)  # what a decoder's segfault or the out-of-memory killer does: no exception
        return extract(source, *args)

    batch._extract_source = crash_on_deadly_files
'''


def test_a_song_that_kills_its_ray_worker_fails_alone_and_the_job_goes_on(model_dir, tmp_path):
    # Ray raises WorkerCrashedError for a task whose worker died: the chunk is run again song by
    # song, so the song that kills its worker gets an error line and its chunk-mates their rows.
    pytest.importorskip("ray")
    lib = tmp_path / "lib"
    for i, name in enumerate(["a.wav", "deadly.wav", "b.wav"]):
        song(lib, name, seconds=5.0, seed=i)
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "crash_hook.py").write_text(_CRASH_HOOK)
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import ray
        import classify
        from workbench import ray_backend

        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={{"env_vars": {{"PYTHONPATH": os.pathsep.join([{str(ROOT)!r}, {str(tmp_path / "hook")!r}])}},
                              "worker_process_setup_hook": "crash_hook.install"}})
        paths = sorted(os.path.join({str(lib)!r}, n) for n in os.listdir({str(lib)!r}))
        got = ray_backend.extract_many_ray(paths, clip_seconds=5.0, cache_dir=False, chunk_size=2, progress=False)
        print("EXTRACT", [paths[i] for i in got.ok], got.failures)
        sys.exit(classify.main([{str(lib)!r}, "--model", {str(model_dir)!r}, "--out", {str(tmp_path / "tags.csv")!r},
                                "--ray", "--chunk-size", "2", "--no-progress"]))
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    deadly, good = str(lib / "deadly.wav"), sorted(str(lib / n) for n in ("a.wav", "b.wav"))
    extract_line = next(line for line in r.stdout.splitlines() if line.startswith("EXTRACT"))
    assert repr(good) in extract_line and f"('{deadly}', '{deadly}: the Ray worker process reading it died" in extract_line
    with open(tmp_path / "tags.csv", newline="") as f:
        assert sorted(row["path"] for row in csv.DictReader(f)) == good
    with open(tmp_path / "tags.csv.errors.csv", newline="") as f:
        errors = list(csv.DictReader(f))
    assert [e["path"] for e in errors] == [deadly] and errors[0]["reason"].startswith("the Ray worker process reading it died")
