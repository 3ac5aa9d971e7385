"""walkthrough.ipynb runs top to bottom in quick mode with a real kernel, offline, and draws its figures.

The notebook runs in a temporary working directory (its run folder and Hub export land there, not in
the repo), with the repo on PYTHONPATH, the feature cache and Hugging Face caches in the temporary
directory, and HF_HUB_OFFLINE=1 so that any attempt to reach the network fails the test.
"""

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "walkthrough.ipynb"
FIGURES = ("genre_spectrograms.png", "training_curves.png", "confusion_matrix.png", "expert_gates.png",
           "roc_curves.png", "calibration.png", "radar_charts.png", "feature_importance.png")
SEED_SECTIONS = ("Imports & setup", "Synthetic audio generators", "Waveform & spectrogram", "Feature extraction",
                 "Dataset generation", "Splits", "Model architecture", "Loss functions", "Training loop",
                 "Training curves", "Confusion matrix", "Expert gate analysis", "ROC curves", "radar charts",
                 "Feature importance", "Predict your own songs", "Save & load", "Publishing to the Hugging Face Hub",
                 "Few-shot", "KAN experts")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """(executed notebook, working directory) after one quick-mode run."""
    from jupyter_client.kernelspec import KernelSpecManager

    work = tmp_path_factory.mktemp("walkthrough")
    env_overrides = {
        "MGM_QUICK": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MUSIC_GENRE_MOE_CACHE": str(work / ".feature-cache"),
        "HF_HOME": str(work / ".hf-home"),
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    # A kernelspec of our own whose argv is this interpreter, so the kernel runs the venv's Python
    # whatever `python3` kernel the user has installed elsewhere.
    spec_dir = work / ".kernels" / "kernels" / "mgm-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        '{"argv": [%s, "-m", "ipykernel_launcher", "-f", "{connection_file}"], '
        '"display_name": "mgm test", "language": "python"}' % repr(sys.executable).replace("'", '"'))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])

    nb = nbformat.read(NOTEBOOK, as_version=4)
    old_env = {k: os.environ.get(k) for k in env_overrides}
    os.environ.update(env_overrides)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="mgm-test", allow_errors=False,
                                         resources={"metadata": {"path": str(work)}},
                                         kernel_manager_class=_manager_class(ksm))
        client.execute()
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, work


def _manager_class(ksm):
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(kernel_spec_manager=ksm, **kwargs)

    return Manager


def test_committed_notebook_is_clean_and_small():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert NOTEBOOK.stat().st_size < 1_000_000
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit the notebook without outputs"


def test_notebook_has_every_section_in_order():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    positions = []
    for name in SEED_SECTIONS:
        hits = [i for i, h in enumerate(headings) if name.lower() in h.lower()]
        assert hits, f"no section heading containing {name!r}; headings: {headings}"
        positions.append(hits[0])
    assert positions == sorted(positions), f"sections out of order: {headings}"


def test_notebook_runs_without_errors_and_shows_its_figures(executed):
    nb, work = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert len(images) >= len(FIGURES)
    run = work / "runs" / "walkthrough"
    for name in FIGURES:
        assert (run / name).stat().st_size > 10_000, name


def test_notebook_writes_a_loadable_run_and_hub_export(executed):
    _, work = executed
    run = work / "runs" / "walkthrough"
    for name in ("moe_genre_checkpoint.pt", "hf_model/model.safetensors", "metrics.json",
                 "demo_song.wav"):
        assert (run / name).is_file(), name
    export = run / "hub_export"
    for name in ("config.json", "model.safetensors", "modeling.py", "README.md", "walkthrough.ipynb"):
        assert (export / name).is_file(), name


# -- the Colab bootstrap (first code cell) ------------------------------------------------------------

BOOTSTRAP_DRIVER = r"""
import fnmatch, json, shutil, subprocess, sys
from pathlib import Path

hub_repo, cell = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
calls = []

def fake_snapshot_download(repo_id, allow_patterns, local_dir):
    # The Hub repo is the export folder: copy what snapshot_download would fetch.
    calls.append(repo_id)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    # huggingface_hub filters the repo's relative paths with fnmatch, whose * also matches "/":
    # "*.py" fetches workbench/*.py too.
    for f in hub_repo.rglob("*"):
        rel = f.relative_to(hub_repo).as_posix()
        if f.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
            (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, Path(local_dir) / rel)
    return str(local_dir)

def no_pip(*args, **kwargs):
    raise AssertionError(f"the bootstrap tried to install packages: {args}")

import huggingface_hub
huggingface_hub.snapshot_download = fake_snapshot_download
subprocess.check_call = no_pip
try:
    exec(cell, {"__name__": "__main__"})
except RuntimeError as e:
    print(json.dumps({"error": str(e)}))
    raise SystemExit(0)
import importlib
origins = {m: str(Path(importlib.import_module(m).__file__).resolve().parent) for m in
           ("configuration", "modeling", "song", "features", "kan", "train", "upload_to_hub", "pipeline")}
origins |= {m: str(Path(importlib.import_module(m).__file__).resolve().parent.parent) for m in
            ("workbench.synth", "workbench.evaluation", "workbench.plots", "workbench.model_card")}
print(json.dumps({"calls": calls, "origins": origins}))
"""


def _run_bootstrap(tmp_path, hub_repo, repo_env):
    import json
    import subprocess

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code")
    (tmp_path / "cell.py").write_text(cell)
    (tmp_path / "driver.py").write_text(BOOTSTRAP_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUSIC_GENRE_MOE_REPO")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / ".hf-home")} | repo_env
    # cwd is a fresh folder and the repo is not on sys.path: the project is not importable, as in Colab.
    r = subprocess.run([sys.executable, "driver.py", str(hub_repo), "cell.py"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_colab_bootstrap_fetches_the_code_from_the_hub_export(executed, tmp_path):
    _, work = executed
    export = work / "runs" / "walkthrough" / "hub_export"
    out = _run_bootstrap(tmp_path, export, {"MUSIC_GENRE_MOE_REPO": "tester/music-genre-moe"})
    assert out.get("calls") == ["tester/music-genre-moe"], out
    code_dir = str((tmp_path / "music-genre-moe-code").resolve())
    assert set(out["origins"].values()) == {code_dir}, out["origins"]


def test_colab_bootstrap_without_a_repo_id_says_what_to_set(executed, tmp_path):
    _, work = executed
    out = _run_bootstrap(tmp_path, work / "runs" / "walkthrough" / "hub_export", {})
    assert "MUSIC_GENRE_MOE_REPO" in out.get("error", ""), out


def test_export_points_the_notebook_at_its_own_repo(executed, tmp_path):
    from workbench import hub_export

    _, work = executed
    run = work / "runs" / "walkthrough"
    hub_export.export_run(run / "hf_model", run, tmp_path / "export", "tester/music-genre-moe")
    exported = nbformat.read(tmp_path / "export" / "walkthrough.ipynb", as_version=4)
    first = next(c.source for c in exported.cells if c.cell_type == "code")
    assert 'os.environ.get("MUSIC_GENRE_MOE_REPO", "tester/music-genre-moe")' in first
