"""Hub export, loading and push, end to end and without a network.

A real quick training run is exported once (session fixtures); loading is checked in fresh Python
processes with HF_HUB_OFFLINE=1 and without the checkout on sys.path (so only the exported files
can be imported), once with every library and once with librosa, soundfile, scipy and sklearn
hidden. The push runs upload_to_hub.py as a subprocess against tests/hub_server.py, a local HTTP
server speaking the Hub API, through the real huggingface_hub client.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import upload_to_hub  # noqa: E402
from workbench import hub_export  # noqa: E402
from hub_server import HubServer  # noqa: E402

TOKEN = "hf_TESTtoken0123456789abcdef"
REPO = "test-user/music-genre-moe"
HIDDEN_LIBS = ("librosa", "soundfile", "scipy", "sklearn")


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def export_dir(quick_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "hub"
    assert upload_to_hub.main(["--run", str(quick_run), "--output-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def trained_model(quick_run):
    """The trained model, rebuilt from the run's checkpoint (not from the export)."""
    from modeling import load_moe_model

    return load_moe_model(quick_run / "moe_genre_checkpoint.pt")[0].eval()


def clean_env(tmp_path, **extra):
    """Environment of a fresh process: offline, private caches, no checkout on PYTHONPATH, no token."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN", "HF_ENDPOINT")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"),
               HF_MODULES_CACHE=str(tmp_path / "hf_modules"), TRANSFORMERS_VERBOSITY="error",
               HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def run_script(code, tmp_path, env, timeout=300):
    """Run `code` in a fresh interpreter in tmp_path; it prints one JSON line last."""
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(code))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-6000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_upload(args, env, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "upload_to_hub.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def export_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- the export -------------------------------------------------------------------------------------


def test_export_holds_every_file_with_real_stats(export_dir, quick_run):
    files = set(export_files(export_dir))
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "metrics.json",
                 "configuration.py", "modeling.py", "kan.py", "features.py", "pipeline.py"):
        assert name in files, name
    if (ROOT / "walkthrough.ipynb").is_file():
        assert "walkthrough.ipynb" in files
    for name in hub_export.code_files():
        assert (export_dir / name).read_bytes() == (ROOT / name).read_bytes(), name

    config = json.loads((export_dir / "config.json").read_text())
    trained = json.loads((quick_run / "hf_model" / "config.json").read_text())
    assert config["feature_mean"] == trained["feature_mean"] and config["feature_std"] == trained["feature_std"]
    assert config["auto_map"] == {"AutoConfig": "configuration.MusicGenreMoEConfig",
                                  "AutoModel": "modeling.MusicGenreMoE",
                                  "AutoModelForAudioClassification": "modeling.MusicGenreMoE"}
    assert config["custom_pipelines"]["audio-classification"]["impl"] == "pipeline.MusicGenreClassificationPipeline"
    pre = json.loads((export_dir / "preprocessor_config.json").read_text())
    assert pre["auto_map"] == {"AutoFeatureExtractor": "pipeline.MusicGenreFeatureExtractor"}
    assert pre["sampling_rate"] == config["sampling_rate"] and pre["clip_seconds"] == config["clip_seconds"]
    leftovers = [p.name for p in export_dir.parent.iterdir() if "partial" in p.name]
    assert leftovers == []


def test_model_card_carries_the_runs_metrics(export_dir, quick_run):
    from huggingface_hub import ModelCard

    metrics = json.loads((quick_run / "metrics.json").read_text())
    card = ModelCard.load(export_dir / "README.md")
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == metrics["test_accuracy"]
    assert results["f1"].metric_value == metrics["macro_f1"]
    assert all(r.task_type == "audio-classification" and r.dataset_split == "test" for r in results.values())
    assert results["accuracy"].dataset_type == ("synthetic" if metrics["dataset"]["source"] == "synthetic"
                                                else metrics["dataset"]["name"])
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "audio-classification"
    assert card.data.license == "mit"
    assert {"custom_code", "music", "mixture-of-experts", "genre-classification"} <= set(card.data.tags)
    text = card.text
    assert f"{100 * metrics['test_accuracy']:.1f}%" in text and f"{metrics['macro_f1']:.3f}" in text
    for genre, value in metrics["self_activation"].items():
        assert f"| {genre} |" in text and f"{value:.3f}" in text
    assert f"{metrics['calibration']['ece']:.3f}" in text
    assert "synthetic audio" in text and "pipeline(" in text and "predict_audio" in text
    if (export_dir / "walkthrough.ipynb").exists():
        assert "walkthrough.ipynb" in text
    n = metrics["test_n"]
    assert f"{metrics['test_correct']} of {n} test clips" in text and "95% Wilson interval" in text
    for heading in ("## Intended uses", "## Out-of-scope uses", "## Training data", "## Training procedure",
                    "## Evaluation", "## Limitations"):
        assert heading in text, heading
    assert 'revision=REVISION, trust_remote_code=True' in text
    assert "already_normalised" not in text
    shown = set(re.findall(r"\]\(figures/([\w.]+)\)", text))
    assert shown == {p.name for p in (export_dir / "figures").iterdir()}  # every figure there, none missing


def real_metrics(name="gtzan-mini-dev", n_tracks=25, correct=21, cv=None):
    """metrics.json of a --data-dir run as train.py writes it (window and track level)."""
    genres = ["blues", "classical", "jazz", "pop", "rock"]
    per = {g: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 30, "roc_auc": 0.9} for g in genres}
    m = {"test_accuracy": 0.7, "test_accuracy_ci95": [0.62, 0.77], "macro_f1": 0.69, "test_n": 150,
         "test_correct": 105, "per_genre": per, "self_activation": {g: 0.6 for g in genres},
         "mean_self_activation": 0.6, "expert_usage": {g: 0.2 for g in genres},
         "track_level": {"test_accuracy": correct / n_tracks, "test_accuracy_ci95": [0.653, 0.936],
                         "macro_f1": 0.838, "n_tracks": n_tracks, "n_correct": correct},
         "dataset": {"name": name, "source": "data-dir", "genres": genres, "n_tracks": [75, 25, n_tracks],
                     "n_windows": [450, 150, 150], "split": "stratified by recording, proportions 60,20,20, seed 0",
                     "skipped": []},
         "train_args": {"lr": 0.003, "weight_decay": 1e-4, "t_max": 120, "eta_min": 1e-5, "epochs": 120,
                        "patience": 20, "batch_size": 64, "grad_clip": 1.0, "ema_decay": 0.995, "seed": 0},
         "epochs_run": 60, "best_epoch": 40}
    if cv:
        m["cross_validation"] = cv
    return m


def build_card(metrics, figures=()):
    from configuration import MusicGenreMoEConfig
    from workbench.model_card import build_model_card

    genres = metrics["dataset"]["genres"]
    config = MusicGenreMoEConfig(id2label=dict(enumerate(genres)), label2id={g: i for i, g in enumerate(genres)})
    return build_model_card(metrics, config, repo_id=REPO, n_parameters=1000, files=["config.json"],
                            figures=list(figures))


def test_card_headline_is_track_level_with_n_and_interval():
    card = build_card(real_metrics())
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == 21 / 25 and "n=25" in results["accuracy"].metric_name
    text = card.text
    assert "84.0% (21 of 25 test recordings, 95% Wilson interval 65.3% to 93.6%)" in text
    assert "one recording moves accuracy by 4.0 points" in text
    assert "70.0% over 150 windows" in text  # the window figure is still there, labelled as such
    text12 = build_card(real_metrics(n_tracks=12, correct=9)).text
    assert "one recording moves accuracy by 8.3 points" in text12 and "4 points" not in text12
    assert "Cross-validated" not in text
    cv = {"accuracy": 0.8, "ci95": [0.67, 0.888], "n_tracks": 50, "folds": 5}
    assert "Cross-validated (5 folds by recording, 50 recordings): accuracy 80.0%, 95% interval 67.0% to 88.8%" \
        in build_card(real_metrics(cv=cv)).text


def test_card_states_data_terms_hyperparameters_and_only_existing_figures():
    text = build_card(real_metrics(), figures=["confusion_matrix.png"]).text
    assert "research use only" in text and "commercial use" in text
    assert "AdamW, learning rate 0.003" in text and "60 run, epoch 40 kept" in text
    assert "125 recordings of 5 genres, split train / validation / test 75 / 25 / 25 recordings" in text
    assert text.count("](figures/") == 1 and "figures/confusion_matrix.png" in text
    other = build_card(real_metrics(name="my-recordings")).text
    assert "research use only" not in other and "own licences" in other and "## Figures" not in other


def test_default_config_json_is_current(tmp_path):
    written = hub_export.write_default_config(tmp_path / "config.json")
    assert json.loads((ROOT / "config.json").read_text()) == json.loads(written.read_text()), \
        "config.json is stale: run `python upload_to_hub.py --write-default-config`"
    assert set(json.loads(written.read_text())["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForAudioClassification"}


# -- loading in a fresh process ---------------------------------------------------------------------


def write_audio_files(folder, sr=44100):
    """A 12-s synthetic jazz clip as WAV, FLAC, OGG and MP3 at 44.1 kHz (so loading must resample)."""
    import soundfile as sf
    from workbench.synth import generate_clip

    y = 0.8 * generate_clip("jazz", np.random.default_rng(1), sr=sr, duration=12.0)
    paths = {}
    for ext, fmt in (("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")):
        paths[ext] = folder / f"song.{ext}"
        sf.write(paths[ext], y, sr, format=fmt)
    np.save(folder / "song_44100.npy", y.astype(np.float32))
    return paths


def test_fresh_process_loads_predicts_and_runs_the_pipeline(export_dir, trained_model, tmp_path):
    x = torch.randn(16, trained_model.config.num_features, generator=torch.Generator().manual_seed(3)) * 50
    with torch.no_grad():
        expected = trained_model(x).logits
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "logits.npy", expected.numpy())
    write_audio_files(tmp_path)

    result = run_script(f"""
        import json, sys
        import numpy as np, torch
        from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, pipeline
        assert not any(p.rstrip("/") == {str(ROOT)!r} for p in sys.path)  # only the export is importable
        export = {str(export_dir)!r}
        x = torch.from_numpy(np.load("x.npy")); expected = torch.from_numpy(np.load("logits.npy"))
        out = {{}}
        config = AutoConfig.from_pretrained(export, trust_remote_code=True)
        out["config_class"] = type(config).__name__
        root = AutoConfig.from_pretrained({str(ROOT)!r}, trust_remote_code=True)  # the repo's config.json
        out["root_config"] = [type(root).__name__, root.has_feature_stats, root.num_labels]
        model = AutoModel.from_pretrained(export, trust_remote_code=True).eval()
        with torch.no_grad():
            out["logits_equal"] = torch.equal(model(x).logits, expected)
        audio_model = AutoModelForAudioClassification.from_pretrained(export, trust_remote_code=True).eval()
        with torch.no_grad():
            out["audio_model_equal"] = torch.equal(audio_model(x).logits, expected)
        one = model.predict(x[0])
        batch = model.predict(x.numpy().tolist())
        out["predict_keys"] = sorted(one)
        out["batch_len"] = len(batch)
        out["batch_first_equal"] = all(abs(batch[0]["probabilities"][g] - p) < 1e-5
                                       for g, p in one["probabilities"].items())
        try:
            model.predict(np.zeros(58))
        except ValueError as e:
            out["wrong_width_error"] = str(e)

        song = model.predict_audio("song.wav")
        out["windows"] = song["num_windows"]
        pipe = pipeline(model=export, trust_remote_code=True)
        out["pipeline_class"] = type(pipe).__name__
        out["files"] = {{ext: pipe("song." + ext) for ext in ("wav", "flac", "ogg", "mp3")}}
        out["wav_matches_predict_audio"] = all(
            abs(r["score"] - song["probabilities"][r["label"]]) < 1e-6 for r in out["files"]["wav"])
        y = np.load("song_44100.npy")
        out["raw"] = pipe({{"raw": y, "sampling_rate": 44100}})
        out["array"] = pipe({{"array": y, "sampling_rate": 44100}}, top_k=2)
        arr_song = model.predict_audio(y, sampling_rate=44100)
        out["raw_matches_predict_audio"] = all(
            abs(r["score"] - arr_song["probabilities"][r["label"]]) < 1e-6 for r in out["raw"])
        explicit = pipeline("audio-classification", model=export, trust_remote_code=True)
        out["explicit_class"] = type(explicit).__name__
        out["explicit"] = explicit("song.mp3")
        print(json.dumps(out))
    """, tmp_path, clean_env(tmp_path))

    genres = trained_model.config.genres
    assert result["config_class"] == "MusicGenreMoEConfig"
    assert result["root_config"] == ["MusicGenreMoEConfig", False, 5]
    assert result["logits_equal"] and result["audio_model_equal"]
    assert result["predict_keys"] == ["confidence", "gate_weights", "predicted_genre", "probabilities"]
    assert result["batch_len"] == 16 and result["batch_first_equal"]
    assert "59" in result["wrong_width_error"] and "58" in result["wrong_width_error"]
    assert result["windows"] >= 2
    assert result["pipeline_class"] == result["explicit_class"] == "MusicGenreClassificationPipeline"
    for name, preds in [*result["files"].items(), ("raw", result["raw"]), ("explicit", result["explicit"])]:
        assert [set(p) for p in preds] == [{"label", "score"}] * len(genres), name
        assert {p["label"] for p in preds} == set(genres), name
        assert abs(sum(p["score"] for p in preds) - 1) < 1e-5, name
        assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True), name
    assert len(result["array"]) == 2 and result["array"] == result["raw"][:2]
    assert result["wav_matches_predict_audio"] and result["raw_matches_predict_audio"]
    # Lossless formats decode to the same samples: same prediction.
    assert result["files"]["flac"][0]["label"] == result["files"]["wav"][0]["label"]


def test_run_model_folder_loads_with_automodel_and_pipeline(quick_run, trained_model, tmp_path):
    """A run's hf_model/ is a complete remote-code folder: no export step needed to load it."""
    hf = quick_run / "hf_model"
    x = torch.randn(4, trained_model.config.num_features, generator=torch.Generator().manual_seed(9)) * 20
    with torch.no_grad():
        expected = trained_model(x).logits
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "logits.npy", expected.numpy())
    paths = write_audio_files(tmp_path)
    result = run_script(f"""
        import json
        import numpy as np, torch
        from transformers import AutoModel, pipeline
        model = AutoModel.from_pretrained({str(hf)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            same = torch.allclose(model(torch.from_numpy(np.load("x.npy"))).logits,
                                  torch.from_numpy(np.load("logits.npy")), atol=1e-6)
        pipe = pipeline(model={str(hf)!r}, trust_remote_code=True)
        preds = pipe({str(paths["wav"])!r})
        song = model.predict_audio({str(paths["wav"])!r})
        print(json.dumps({{"same": same, "pipeline": type(pipe).__name__, "labels": [p["label"] for p in preds],
                          "top": preds[0]["label"], "song": song["predicted_genre"]}}))
    """, tmp_path, clean_env(tmp_path))
    assert result["same"] and result["pipeline"] == "MusicGenreClassificationPipeline"
    assert set(result["labels"]) == set(trained_model.config.genres) and result["top"] == result["song"]


def test_loads_and_predicts_with_only_torch_and_transformers(export_dir, trained_model, tmp_path):
    x = torch.randn(4, trained_model.config.num_features, generator=torch.Generator().manual_seed(5)) * 50
    with torch.no_grad():
        probs = trained_model(x).logits.softmax(-1)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "probs.npy", probs.numpy())
    hide = tmp_path / "hide"
    hide.mkdir()
    # `sys.modules[name] = None` makes `import name` raise ImportError and find_spec return None,
    # which is what transformers' availability checks see for a library that is not installed.
    (hide / "sitecustomize.py").write_text(f"import sys\nfor name in {HIDDEN_LIBS!r}:\n    sys.modules[name] = None\n")

    result = run_script(f"""
        import json, sys
        import numpy as np, torch
        from transformers import AutoModel
        out = {{}}
        for name in {HIDDEN_LIBS!r}:
            try:
                __import__(name)
                out[name] = "importable"
            except ImportError:
                out[name] = "hidden"
        model = AutoModel.from_pretrained({str(export_dir)!r}, trust_remote_code=True)
        x = np.load("x.npy")
        preds = model.predict(x)
        expected = np.load("probs.npy")
        out["probs_close"] = all(np.allclose([p["probabilities"][g] for g in model.config.genres], e, atol=1e-6)
                                 for p, e in zip(preds, expected))
        try:
            model.predict_audio(np.zeros(22050, dtype=np.float32), sampling_rate=22050)
            out["audio"] = "no error"
        except ImportError as e:
            out["audio"] = "ImportError: " + str(e)
        out["loaded"] = sorted(m for m in {HIDDEN_LIBS!r} if sys.modules.get(m) is not None)
        print(json.dumps(out))
    """, tmp_path, clean_env(tmp_path, PYTHONPATH=str(hide)))

    assert {result[name] for name in HIDDEN_LIBS} == {"hidden"}
    assert result["probs_close"]
    assert result["audio"].startswith("ImportError") and "librosa" in result["audio"]
    assert result["loaded"] == []


# -- push to a local Hub --------------------------------------------------------------------------


def hub_env(tmp_path, endpoint, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    env.update(extra)
    return env


def test_push_sends_one_commit_with_every_file(quick_run, export_dir, tmp_path):
    with HubServer() as hub:
        r = run_upload(["--run", str(quick_run), "--repo", REPO, "--private"],
                       hub_env(tmp_path, hub.url, HF_TOKEN=TOKEN))
        state = hub.state
    assert r.returncode == 0, r.stderr[-3000:]
    assert TOKEN not in r.stdout + r.stderr
    assert list(state.repos) == [REPO] and state.repos[REPO]["visibility"] == "private"
    assert len(state.commits) == 1
    commit = state.commits[0]
    assert commit["repo"] == REPO and commit["revision"] == "main"
    # The push builds its own export; it equals the --output-dir export file for file, except that
    # the card's code examples name the repo pushed to.
    pushed, exported = dict(commit["files"]), export_files(export_dir)
    assert f'from_pretrained("{REPO}"'.encode() in pushed.pop("README.md")
    exported.pop("README.md")
    if "walkthrough.ipynb" in exported:  # the notebook's default REPO_ID names the repo pushed to, too
        placeholder = hub_export.NOTEBOOK_REPO_PLACEHOLDER.encode()
        assert pushed.pop("walkthrough.ipynb") == exported.pop("walkthrough.ipynb").replace(placeholder, REPO.encode())
    assert pushed == exported
    assert (export_dir / "model.safetensors").read_bytes() in state.lfs_objects.values()  # went through LFS
    authed = [(m, p, a) for m, p, a in state.requests if p.startswith(("/api/repos", "/api/models", f"/{REPO}"))]
    assert authed and all(a == f"Bearer {TOKEN}" for _, _, a in authed)
    paths = [p for _, p, _ in state.requests]
    assert "/api/repos/create" in paths and f"/api/models/{REPO}/commit/main" in paths
    assert f"/{REPO}.git/info/lfs/objects/batch" in paths


def test_push_with_rejected_token_fails_cleanly(quick_run, tmp_path):
    with HubServer(reject_token=True) as hub:
        r = run_upload(["--run", str(quick_run), "--repo", REPO, "--token", TOKEN], hub_env(tmp_path, hub.url))
        commits = hub.state.commits
    assert r.returncode == 1 and commits == []
    assert TOKEN not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "rejected the token" in lines[0] and "401" in lines[0]


def test_push_without_token_fails_before_exporting(tmp_path):
    r = run_upload(["--run", str(tmp_path / "nowhere"), "--repo", REPO], hub_env(tmp_path, "http://127.0.0.1:9"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Hugging Face token" in lines[0]


def test_push_network_failure(quick_run, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_upload(["--run", str(quick_run), "--repo", REPO, "--token", TOKEN],
                   hub_env(tmp_path, f"http://127.0.0.1:{port}"))
    assert r.returncode == 1 and TOKEN not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "network failure" in lines[0]


# -- refused exports (in process: no push involved) -------------------------------------------------


def copy_run(quick_run, tmp_path, *, metrics=True, hf_model=True):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy2(quick_run / "moe_genre_checkpoint.pt", run)
    if metrics:
        shutil.copy2(quick_run / "metrics.json", run)
    if hf_model:
        shutil.copytree(quick_run / "hf_model", run / "hf_model")
    return run


def assert_refused(argv, capsys, out, fragment):
    assert upload_to_hub.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if "partial" in p.name]


def test_refuses_a_run_without_metrics(quick_run, tmp_path, capsys):
    run = copy_run(quick_run, tmp_path, metrics=False)
    out = tmp_path / "export"
    assert_refused(["--run", str(run), "--output-dir", str(out)], capsys, out, "metrics.json not found")


def test_refuses_metrics_without_test_accuracy(quick_run, tmp_path, capsys):
    run = copy_run(quick_run, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["test_accuracy"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "export"
    assert_refused(["--run", str(run), "--output-dir", str(out)], capsys, out, "test_accuracy")


def test_refuses_a_corrupt_checkpoint(quick_run, tmp_path, capsys):
    run = copy_run(quick_run, tmp_path, hf_model=False)
    (run / "moe_genre_checkpoint.pt").write_bytes(b"not a torch checkpoint")
    out = tmp_path / "export"
    assert_refused(["--checkpoint", str(run / "moe_genre_checkpoint.pt"), "--output-dir", str(out)],
                   capsys, out, "cannot load checkpoint")


def test_refuses_corrupt_safetensors(quick_run, tmp_path, capsys):
    run = copy_run(quick_run, tmp_path)
    (run / "hf_model" / "model.safetensors").write_bytes(b"\x00" * 64)
    out = tmp_path / "export"
    assert_refused(["--run", str(run), "--output-dir", str(out)], capsys, out, "cannot load checkpoint")


def test_refuses_a_missing_run(tmp_path, capsys):
    out = tmp_path / "export"
    assert_refused(["--run", str(tmp_path / "nowhere"), "--output-dir", str(out)], capsys, out,
                   "run folder not found")


def test_exports_from_the_checkpoint_file_too(quick_run, export_dir, tmp_path):
    run = copy_run(quick_run, tmp_path, hf_model=False)
    out = tmp_path / "export"
    assert upload_to_hub.main(["--checkpoint", str(run / "moe_genre_checkpoint.pt"), "--output-dir", str(out)]) == 0
    from modeling import MusicGenreMoE

    x = torch.randn(4, 59, generator=torch.Generator().manual_seed(0))
    a, b = MusicGenreMoE.from_pretrained(out).eval(), MusicGenreMoE.from_pretrained(export_dir).eval()
    with torch.no_grad():
        assert torch.equal(a(x).logits, b(x).logits)
    assert json.loads((out / "config.json").read_text())["feature_mean"] == \
        json.loads((export_dir / "config.json").read_text())["feature_mean"]


# -- a model trained on recordings (the musicnn front end), published and loaded back ---------------

SHARED_GTZAN = ROOT.parent / "shared" / "data" / "gtzan-mini-dev"


def recordings_folder(root):
    """Two genres of recordings: 3 GTZAN clips each from ../shared when present, generated audio otherwise."""
    import soundfile as sf
    from workbench.synth import generate_clip

    for genre in ("classical", "metal"):
        (root / genre).mkdir(parents=True)
        for i in range(3):
            src = SHARED_GTZAN / genre / f"{genre}.0000{i}.wav"
            if src.is_file():  # a symlink: the recordings are never copied
                (root / genre / src.name).symlink_to(src)
            else:
                synth_genre = "classical" if genre == "classical" else "rock"
                sf.write(root / genre / f"{genre}{i}.wav",
                         generate_clip(synth_genre, np.random.default_rng(i), duration=12.0), 22050)
    return root


def test_model_trained_on_recordings_publishes_and_loads_back_offline(tmp_path):
    """train.py on recordings (musicnn front end) -> upload_to_hub.py push to the local Hub -> the pushed
    files, in a fresh offline process: AutoModel.predict_audio and pipeline give predict_audio's answer."""
    import train
    from modeling import load_moe_model
    from workbench.synth import generate_clip
    import soundfile as sf

    data, run = recordings_folder(tmp_path / "data"), tmp_path / "run"
    train.main(["--data-dir", str(data), "--out", str(run), "--split", "1,1,1", "--epochs", "3", "--patience", "3",
                "--no-plots", "--cache-dir", "none", "--n-jobs", "1"], log=lambda *a, **k: None)
    model = load_moe_model(run)[0]
    assert model.config.frontend == "musicnn"
    song = tmp_path / "song.wav"
    sf.write(song, generate_clip("classical", np.random.default_rng(5), duration=14.0), 22050)
    expected = model.predict_audio(str(song))

    with HubServer() as hub:
        r = run_upload(["--run", str(run), "--repo", REPO], hub_env(tmp_path, hub.url, HF_TOKEN=TOKEN))
        state = hub.state
    assert r.returncode == 0, r.stderr[-3000:]
    (commit,) = state.commits
    pulled = tmp_path / "pulled"
    for name, content in commit["files"].items():  # what the Hub holds, LFS pointers resolved
        (pulled / name).parent.mkdir(parents=True, exist_ok=True)
        (pulled / name).write_bytes(content)
    assert (pulled / "model.safetensors").stat().st_size > 3_000_000  # the front end's weights travelled

    result = run_script(f"""
        import json
        from transformers import AutoModel, pipeline
        model = AutoModel.from_pretrained({str(pulled)!r}, trust_remote_code=True)
        song = model.predict_audio("song.wav")
        piped = pipeline(model={str(pulled)!r}, trust_remote_code=True)("song.wav", details=True)
        print(json.dumps({{"song": song["probabilities"], "piped": piped["probabilities"],
                          "windows": [[w["start"], w["end"]] for w in piped["windows"]], "tags": list(song["tags"])}}))
    """, tmp_path, clean_env(tmp_path))
    for got in (result["song"], result["piped"]):
        assert got == pytest.approx(expected["probabilities"], abs=1e-5)
    assert result["windows"] == [[w["start"], w["end"]] for w in expected["windows"]]
    assert result["tags"] == list(expected["tags"])
