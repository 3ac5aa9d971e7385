"""classify.py (tag a library) and ray_backend.py (the same job on Ray).

A small library is generated on the fly: synthetic songs of 3-12 s in WAV, FLAC, OGG, MP3 and AU
in nested folders, one with a silent intro, one shorter than a window, plus a corrupt ".wav"
(random bytes), a text file named ".mp3", a notes.txt and a hidden file. The model is a freshly
initialised MusicGenreMoE with feature statistics from the library (no training: these tests are
about the plumbing, and `predict_audio` is the reference every row is checked against).

The Ray tests start a local Ray with 2 CPUs once for the module (about 10-30 s on 2 cores).
"""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import classify
from workbench import hub_export, tagging  # noqa: E402
from workbench.batch import extract_many
from configuration import MusicGenreMoEConfig
from features import SAMPLE_RATE, AudioError, load_audio
from modeling import MusicGenreMoE
from workbench.synth import generate_clip

ROOT = Path(__file__).resolve().parents[1]
GENRES = ["jazz", "blues", "rock", "pop", "classical"]
# name -> (genre, seconds); windows of 5 s: 12 s -> 2, 8 s -> 2 (tail aligned to the end), 3 s -> 1 (repeated)
SONGS = {
    "jazz/a.wav": ("jazz", 12.0),
    "rock/b.flac": ("rock", 8.0),
    "rock/live/c.ogg": ("rock", 11.0),
    "classical/d.mp3": ("classical", 7.0),
    "pop/e.au": ("pop", 6.0),
    "short.wav": ("blues", 3.0),
}
QUIET_INTRO = "quiet_intro.wav"  # 5 s of silence, then 5 s of music: one window, starting at 5.0 s
N_GOOD = len(SONGS) + 1
BAD = ("broken.wav", "misc/fake.mp3")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    for i, (name, (genre, seconds)) in enumerate(SONGS.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, generate_clip(genre, np.random.default_rng(i), duration=seconds), SAMPLE_RATE)
    music = generate_clip("jazz", np.random.default_rng(99), duration=5.0)
    sf.write(root / QUIET_INTRO, np.concatenate([np.zeros(5 * SAMPLE_RATE, np.float32), music]), SAMPLE_RATE)
    (root / "broken.wav").write_bytes(np.random.default_rng(0).bytes(20_000))
    (root / "misc").mkdir()
    (root / "misc" / "fake.mp3").write_text("this is not audio\n")
    (root / "misc" / "notes.txt").write_text("liner notes\n")
    (root / "misc" / ".hidden.wav").write_bytes(b"resource fork")
    return root


def good_paths(library):
    return sorted(str(library / n) for n in [*SONGS, QUIET_INTRO])


@pytest.fixture(scope="module")
def run_dir(library, tmp_path_factory):
    """A run folder (hf_model/ + checkpoint) of an untrained model whose stats fit the library."""
    feats = np.concatenate(extract_many(good_paths(library), clip_seconds=5.0, n_jobs=1, cache_dir=False).features)
    mean, std = feats.mean(0), feats.std(0) + 1e-3
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(id2label=dict(enumerate(GENRES)), label2id={g: i for i, g in enumerate(GENRES)},
                                 feature_mean=[float(v) for v in mean], feature_std=[float(v) for v in std])
    model = MusicGenreMoE(config).eval()
    out = tmp_path_factory.mktemp("run")
    model.save_pretrained(out / "hf_model")
    torch.save({"model_state_dict": model.state_dict(), "config": model.config.to_dict()},
               out / "moe_genre_checkpoint.pt")
    return out


@pytest.fixture(scope="module")
def model(run_dir):
    return classify.load_model(str(run_dir))


def run(args, capsys=None):
    """classify.main in this process; (exit code, stdout, stderr) when capsys is given."""
    code = classify.main([str(a) for a in args] + ["--no-progress"])
    if capsys is None:
        return code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def by_path(rows):
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a song appears twice in the output"
    return {r["path"]: r for r in rows}


def assert_same_rows(a, b, tol=2e-6):
    """Same songs, same genres, same numbers (to the printed 6 decimals, +- float noise of batching)."""
    a, b = by_path(a), by_path(b)
    assert sorted(a) == sorted(b)
    for p in a:
        for k, va in a[p].items():
            vb = b[p][k]
            try:
                assert abs(float(va) - float(vb)) <= tol, (p, k, va, vb)
            except ValueError:
                assert va == vb, (p, k, va, vb)


@pytest.fixture(scope="module")
def reference(library, run_dir, tmp_path_factory):
    """One complete local run with every output: (folder, stdout)."""
    out = tmp_path_factory.mktemp("reference")
    code = classify.main([str(library), "--model", str(run_dir), "--out", str(out / "p.csv"), "--jsonl",
                          str(out / "p.jsonl"), "--timeline-dir", str(out / "png"), "--n-jobs", "2",
                          "--no-progress"])
    assert code == 0
    return out


# -- rows ------------------------------------------------------------------------------------------


def test_one_row_per_readable_song_matching_predict_audio(reference, library, model):
    rows = read_rows(reference / "p.csv")
    assert sorted(r["path"] for r in rows) == good_paths(library)
    assert list(rows[0]) == (["path", "genre", "confidence", "top1", "top1_prob", "top2", "top2_prob", "top3",
                              "top3_prob", "duration_s", "num_windows", "known", "novelty", "tags"] + [f"gate_{g}" for g in GENRES])
    for r in rows:
        ref = model.predict_audio(r["path"])
        assert r["genre"] == ref["predicted_genre"]
        assert float(r["confidence"]) == pytest.approx(ref["confidence"], abs=2e-6)
        assert int(r["num_windows"]) == ref["num_windows"]
        top = sorted(ref["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        assert [r["top1"], r["top2"], r["top3"]] == [g for g, _ in top]
        assert [float(r[f"top{k}_prob"]) for k in (1, 2, 3)] == pytest.approx([p for _, p in top], abs=2e-6)
        gates = [float(r[f"gate_{g}"]) for g in GENRES]
        assert gates == pytest.approx([ref["gate_weights"][g] for g in GENRES], abs=2e-6)
        assert sum(gates) == pytest.approx(1.0, abs=1e-4)
        assert float(r["duration_s"]) == pytest.approx(sf.info(r["path"]).duration, abs=1e-3)
    windows = {Path(r["path"]).name: int(r["num_windows"]) for r in rows}
    assert windows == {"a.wav": 2, "b.flac": 2, "c.ogg": 2, "d.mp3": 1, "e.au": 1, "short.wav": 1,
                       QUIET_INTRO: 1}


def test_unreadable_files_go_to_the_errors_file_and_the_summary(library, run_dir, tmp_path, capsys):
    code, out, err = run([library, "--model", run_dir, "--out", tmp_path / "p.csv", "--n-jobs", "1"], capsys)
    assert code == 0
    errors = read_rows(tmp_path / "p.csv.errors.csv")
    assert sorted(e["path"] for e in errors) == sorted(str(library / b) for b in BAD)
    for e in errors:
        # the loader's own message, without the path again (it has its own column)
        with pytest.raises(AudioError) as raised:
            load_audio(e["path"])
        assert e["reason"] and f"{e['path']}: {e['reason']}" == str(raised.value)
    # notes.txt and .hidden.wav are not audio files of the folder: neither rows nor errors
    assert "7 songs" in out and "2 failed" in out and "1 non-audio files in folders ignored" in out
    counts = {}
    for r in read_rows(tmp_path / "p.csv"):
        counts[r["genre"]] = counts.get(r["genre"], 0) + 1
    for genre, n in counts.items():
        assert f"{genre} {n}" in out
    assert "2 failures" in out


def test_a_file_named_explicitly_is_tried_whatever_its_extension(library, run_dir, tmp_path, capsys):
    code, out, _ = run([library / "misc" / "notes.txt", library / "jazz" / "a.wav", "--model", run_dir,
                        "--out", tmp_path / "p.csv", "--n-jobs", "1"], capsys)
    assert code == 0
    assert [r["path"] for r in read_rows(tmp_path / "p.csv")] == [str(library / "jazz" / "a.wav")]
    assert [e["path"] for e in read_rows(tmp_path / "p.csv.errors.csv")] == [str(library / "misc" / "notes.txt")]


def test_globs_and_top_k(library, run_dir, tmp_path, capsys):
    code, _, _ = run([str(library / "rock" / "**" / "*.*"), "--model", run_dir, "--out", tmp_path / "p.csv",
                      "--top-k", "5", "--n-jobs", "1"], capsys)
    assert code == 0
    rows = read_rows(tmp_path / "p.csv")
    assert sorted(Path(r["path"]).name for r in rows) == ["b.flac", "c.ogg"]
    for r in rows:
        probs = [float(r[f"top{k}_prob"]) for k in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)


# -- per-window outputs ----------------------------------------------------------------------------


def test_jsonl_holds_every_window(reference):
    rows = by_path(read_rows(reference / "p.csv"))
    lines = [json.loads(x) for x in (reference / "p.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == sorted(rows)
    for rec in lines:
        win = rec["windows"]
        assert len(win) == rec["num_windows"] == int(rows[rec["path"]]["num_windows"])
        assert rec["genre"] == rows[rec["path"]]["genre"]
        mean = np.mean([[w["probabilities"][g] for g in GENRES] for w in win], axis=0)
        assert mean == pytest.approx([rec["probabilities"][g] for g in GENRES], abs=2e-6)
        for w in win:
            assert set(w) == {"start", "end", "genre", "confidence", "probabilities", "gate_weights"}
            assert sum(w["gate_weights"].values()) == pytest.approx(1.0, abs=1e-4)
    spans = {Path(r["path"]).name: [(w["start"], w["end"]) for w in r["windows"]] for r in lines}
    assert spans["a.wav"] == [(0.0, 5.0), (5.0, 10.0)]
    assert spans["b.flac"] == [(0.0, 5.0), (3.0, 8.0)]  # the tail window is aligned to the song's end
    assert spans["short.wav"] == [(0.0, 3.0)]         # one window, repeated audio, ends with the song
    assert spans[QUIET_INTRO] == [(5.0, 10.0)]  # the silent first window is skipped: its index is not its time


def test_timeline_png_per_song(reference):
    pngs = sorted((reference / "png").iterdir())
    rows = read_rows(reference / "p.csv")
    assert {p.name for p in pngs} == {tagging.timeline_name(r["path"]) for r in rows}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resume ----------------------------------------------------------------------------------------


def test_resume_drops_a_torn_line_and_finishes_the_rest(reference, library, run_dir, tmp_path, capsys):
    full = (reference / "p.csv").read_bytes()
    lines = full.split(b"\n")
    # header + 2 whole rows + half of the third: what a crash mid-write would leave
    (tmp_path / "p.csv").write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][: len(lines[3]) // 2])
    jl = (reference / "p.jsonl").read_bytes().split(b"\n")
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(jl[:4]) + b"\n" + jl[4][:10])  # one line ahead of the CSV, torn
    code, out, err = run([library, "--model", run_dir, "--out", tmp_path / "p.csv", "--jsonl", tmp_path / "p.jsonl",
                          "--n-jobs", "2"], capsys)
    assert code == 0
    assert "dropped an incomplete last line" in err and "resuming: 2 of 9 songs already done" in err
    assert "classified 5 songs" in out and "2 failed" in out  # 9 files: 2 rows kept, 5 songs + 2 bad files
    assert_same_rows(read_rows(tmp_path / "p.csv"), read_rows(reference / "p.csv"))
    assert (tmp_path / "p.csv").read_bytes().endswith(b"\n")
    jpaths = [json.loads(x)["path"] for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(jpaths) == good_paths(library)

    # A second resume has nothing left to do, and the failures are not retried unless asked.
    code, out, _ = run([library, "--model", run_dir, "--out", tmp_path / "p.csv", "--n-jobs", "1"], capsys)
    assert code == 0 and "classified 0 songs" in out and "9 skipped" in out
    code, out, _ = run([library, "--model", run_dir, "--out", tmp_path / "p.csv", "--n-jobs", "1",
                        "--retry-errors"], capsys)
    assert code == 0 and "2 failed" in out
    assert len(read_rows(tmp_path / "p.csv.errors.csv")) == 2


def test_resume_after_the_process_is_killed(reference, library, run_dir, tmp_path):
    """SIGKILL a real run after its first rows, run it again: the same rows, each once."""
    out = tmp_path / "p.csv"
    cmd = [sys.executable, str(ROOT / "classify.py"), str(library), "--model", str(run_dir), "--out", str(out),
           "--chunk-size", "1", "--n-jobs", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    rows_at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        rows_at_kill = max(0, out.read_bytes().count(b"\n") - 1) if out.exists() else 0
        if rows_at_kill >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be interrupted: {proc.stderr.read()[-500:]}"
    assert 2 <= rows_at_kill < N_GOOD
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    assert "resuming" in done.stderr
    assert_same_rows(read_rows(out), read_rows(reference / "p.csv"))


# -- arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing-path", "empty-glob", "bad-model", "top-k-0", "top-k-too-big",
                                  "out-folder-missing", "ray-path", "other-columns", "no-audio",
                                  "nothing-given", "not-a-number", "device-unknown", "device-no-cuda",
                                  "device-ray"])
def test_bad_arguments_fail_with_one_line(case, library, run_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    base = [library, "--model", run_dir, "--out", out]
    args, expect = {
        "missing-path": ([tmp_path / "nope", "--model", run_dir, "--out", out], "nope: no such file or folder"),
        "empty-glob": ([tmp_path / "*.flac", "--model", run_dir, "--out", out], "matches no file"),
        "bad-model": ([library, "--model", tmp_path / "model.pt", "--out", out], "model.pt: no such file"),
        "top-k-0": (base + ["--top-k", "0"], "--top-k 0"),
        "top-k-too-big": (base + ["--top-k", "9"], "--top-k 9: the model has only 5 genres"),
        "out-folder-missing": ([library, "--model", run_dir, "--out", tmp_path / "no" / "p.csv"], "does not exist"),
        "ray-path": ([library, "--model", run_dir, "--out", out, "--ray", str(library)], "not a Ray address"),
        "other-columns": (base + ["--top-k", "2"], "other columns"),
        "no-audio": ([tmp_path / "docs", "--model", run_dir, "--out", out], "no audio files"),
        "nothing-given": ([], "required: PATH, --model, --out"),
        "not-a-number": (base + ["--top-k", "abc"], "--top-k: invalid int value: 'abc'"),
        "device-unknown": (base + ["--device", "gpu"], "--device gpu: expected cpu, cuda or cuda:N"),
        "device-no-cuda": (base + ["--device", "cuda:7"], "--device cuda:7: CUDA is not available"
                           if not torch.cuda.is_available() else "CUDA device(s)"),
        "device-ray": (base + ["--device", "cuda", "--ray"], "not with --ray"),
    }[case]
    if case == "other-columns":
        out.write_text("path,genre,confidence\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no songs here\n")
    code, stdout, err = run(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("classify.py: error: ") and expect in lines[0], err
    if case != "other-columns":
        assert not out.exists()  # nothing written before the arguments are checked


def test_every_model_source_gives_the_same_rows(reference, library, run_dir, tmp_path, model):
    """Run folder, save_pretrained folder, .pt checkpoint and a folder with its own code (the Hub
    export, loaded with trust_remote_code) are all accepted and agree."""
    import upload_to_hub

    exported = tmp_path / "export"
    exported.mkdir()
    hub_export.write_model_folder(model, exported)
    some = [library / "jazz", library / "short.wav"]
    expected = [r for r in read_rows(reference / "p.csv") if "/jazz/" in r["path"] or r["path"].endswith("short.wav")]
    for i, src in enumerate([run_dir / "hf_model", run_dir / "moe_genre_checkpoint.pt", exported]):
        out = tmp_path / f"p{i}.csv"
        assert run([*some, "--model", src, "--out", out, "--n-jobs", "1"]) == 0
        assert_same_rows(read_rows(out), expected)
    from workbench.runs import resolve_model_spec

    assert resolve_model_spec(str(exported))[0] == "local"  # this project's export: local classes, no remote code
    assert resolve_model_spec("someone/music-genre-moe") == ("hub", "someone/music-genre-moe")


@pytest.fixture(scope="module")
def musicnn_model(run_dir, tmp_path_factory):
    """A save_pretrained folder of an untrained model with the musicnn front end."""
    base = MusicGenreMoEConfig.from_pretrained(run_dir / "hf_model")
    n_extra = base.__class__(frontend="musicnn").input_size - base.num_features
    torch.manual_seed(1)
    config = MusicGenreMoEConfig(id2label=base.id2label, label2id=base.label2id, frontend="musicnn",
                                 feature_mean=list(base.feature_mean) + [0.0] * n_extra,
                                 feature_std=list(base.feature_std) + [1.0] * n_extra)
    folder = tmp_path_factory.mktemp("musicnn") / "musicnn_model"
    MusicGenreMoE(config).save_pretrained(folder)
    return folder


def test_a_model_with_the_pretrained_front_end(library, musicnn_model, tmp_path):
    """config.frontend='musicnn': the workers compute each window's embedding with the model's own
    front end (iter_extract(frontend=model.frontend)); rows agree with predict_audio."""
    songs = [library / "jazz" / "a.wav", library / "short.wav"]
    assert run([*songs, "--model", musicnn_model, "--out", tmp_path / "p.csv", "--n-jobs", "2"]) == 0
    model = classify.load_model(str(musicnn_model))
    rows = read_rows(tmp_path / "p.csv")
    assert sorted(r["path"] for r in rows) == sorted(map(str, songs))
    for r in rows:
        ref = model.predict_audio(r["path"])
        assert r["genre"] == ref["predicted_genre"] and int(r["num_windows"]) == ref["num_windows"]
        assert float(r["confidence"]) == pytest.approx(ref["confidence"], abs=2e-6)
        assert [float(r[f"gate_{g}"]) for g in GENRES] == pytest.approx([ref["gate_weights"][g] for g in GENRES],
                                                                        abs=2e-6)


# -- Ray -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the module (classify and extract_many_ray reuse it)."""
    import ray
    from workbench import ray_backend

    started = ray_backend.init_ray(num_cpus=2)
    yield ray_backend
    if started:
        ray.shutdown()


def test_ray_gives_the_same_rows_errors_and_resume_as_local(local_ray, reference, library, run_dir, tmp_path,
                                                            capsys):
    out = tmp_path / "p.csv"
    # Start from an interrupted state (3 rows and a torn line) so that resume is checked on Ray too.
    lines = (reference / "p.csv").read_bytes().split(b"\n")
    out.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][:7])
    code, stdout, err = run([library, "--model", run_dir, "--out", out, "--jsonl", tmp_path / "p.jsonl", "--ray",
                             "--chunk-size", "2"], capsys)
    assert code == 0, err
    assert "resuming: 3 of 9" in err and "classified 4 songs" in stdout and "2 failed" in stdout
    assert_same_rows(read_rows(out), read_rows(reference / "p.csv"))
    errors = read_rows(tmp_path / "p.csv.errors.csv")
    assert sorted((e["path"], e["reason"]) for e in errors) == sorted(
        (e["path"], e["reason"]) for e in read_rows(reference / "p.csv.errors.csv"))
    ref_windows = {json.loads(x)["path"]: json.loads(x)["windows"] for x in (reference / "p.jsonl").read_text().splitlines()}
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert [(w["start"], w["end"], w["genre"]) for w in rec["windows"]] == \
               [(w["start"], w["end"], w["genre"]) for w in ref_windows[rec["path"]]]


def test_extract_many_ray_matches_extract_many(local_ray, library):
    sources = good_paths(library)[:4] + [str(library / "broken.wav"),
                                         generate_clip("rock", np.random.default_rng(5), duration=6.0),
                                         np.zeros(SAMPLE_RATE, np.float32)]  # silent: a failure named array[6]
    local = extract_many(sources, clip_seconds=5.0, n_jobs=1, cache_dir=False)
    remote = local_ray.extract_many_ray(sources, clip_seconds=5.0, cache_dir=False, chunk_size=3)
    assert remote.ok == local.ok == [0, 1, 2, 3, 5]
    assert remote.failures == local.failures
    assert [f.shape for f in remote.features] == [f.shape for f in local.features]
    for a, b in zip(remote.features, local.features):
        # Ray tasks run BLAS on one thread, this process on several: float32 rounding may differ.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [s.tolist() for s in remote.starts] == [s.tolist() for s in local.starts]


def test_the_gpu_path_runs_many_songs_patches_through_the_front_end_together(library, musicnn_model, tmp_path,
                                                                             monkeypatch):
    """--device cuda's plumbing, run on this CPU (CI has no GPU): the workers decode and cut the
    patches, and this process embeds a whole chunk's songs in shared passes (`batch.embed_pending`)
    and caches them; the rows are those of the CPU path, unreadable files still go to the errors file."""
    import frontend
    from workbench import batch

    songs = [str(p) for p in sorted(library.rglob("*")) if p.is_file() and p.suffix != ".txt"
             and not p.name.startswith(".")]
    assert run([*songs, "--model", musicnn_model, "--out", tmp_path / "cpu.csv", "--n-jobs", "2",
                "--frontend-precision", "fp32"]) == 0
    model = classify.load_model(str(musicnn_model))
    passes = []
    real = frontend.patch_embeddings

    def counted(net, per_window, *args, **kwargs):
        passes.append(len(per_window))
        return real(net, per_window, *args, **kwargs)

    monkeypatch.setattr(frontend, "patch_embeddings", counted)
    settings = tagging.Settings(sr=SAMPLE_RATE, clip_seconds=float(model.config.clip_seconds), top_k=3,
                                cache_dir=tmp_path / "cache", frontend_precision="fp32", device="cuda:0")
    for attempt in ("fresh", "cached"):
        passes.clear()
        outputs = tagging.Outputs(tmp_path / f"{attempt}.csv", tmp_path / f"{attempt}.errors.csv", None, None,
                                  tagging.model_genres(model), 3)
        outputs.open(overwrite=True, retry_errors=False)
        tagging.run_local(model, songs, settings, outputs, n_jobs=2, chunk_size=len(songs), progress=lambda n: None)
        outputs.close()
        assert_same_rows(read_rows(tmp_path / f"{attempt}.csv"), read_rows(tmp_path / "cpu.csv"))
        got, want = (sorted(read_rows(p), key=lambda r: r["path"])
                     for p in (tmp_path / f"{attempt}.errors.csv", tmp_path / "cpu.csv.errors.csv"))
        assert got == want
        windows = sum(int(r["num_windows"]) for r in read_rows(tmp_path / "cpu.csv"))
        # Fresh: every readable song's windows in one call (one chunk); cached: no front-end work at all.
        assert passes == ([windows] if attempt == "fresh" else []), passes
    with pytest.raises(ValueError, match="clip_seconds=None"):
        list(batch.iter_extract(songs[:1], frontend=model.frontend, frontend_device="cuda:0"))
