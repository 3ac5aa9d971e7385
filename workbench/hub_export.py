"""A run -> a Hugging Face Hub model folder (weights, config, code, card, notebook), and the push.

upload_to_hub.py is the command; train.py writes every run's `hf_model/` with `write_model_folder`.
"""

import json
import math
import os
import shutil
from pathlib import Path

from modeling import AUTO_MAP, CHECKPOINT_NAME, CUSTOM_PIPELINES, EXPORT_DIR_NAME, model_code_files
from workbench.atomic_files import fresh_partial_folder, move_into_place, unusable_output, write_text

ROOT = Path(__file__).resolve().parent.parent  # the repository: the files that ship sit at its top
EXPORT_KIND = "out"  # exports are built in .out-partial-<name>-<pid>-<random> beside --output-dir
DEFAULT_RUN = ROOT / "runs" / "latest"

NOTEBOOK = "walkthrough.ipynb"
# The notebook's own imports beyond the model's code, shipped with it (with their sibling imports,
# see `notebook_modules`) so that Colab can fetch them: its first cell runs
# snapshot_download(allow_patterns=["*.py", "config.json"]).
NOTEBOOK_MODULES = ("train.py", "upload_to_hub.py", "workbench")
NOTEBOOK_REPO_PLACEHOLDER = "your-username/music-genre-moe"
FIGURES = ("confusion_matrix.png", "expert_gates.png", "calibration.png", "roc_curves.png",
           "training_curves.png", "radar_charts.png", "feature_importance.png", "genre_spectrograms.png")


class UploadError(Exception):
    """An expected failure: reported as one line, exit code 1."""


# -- loading a run ------------------------------------------------------------------------------------


def resolve_run(run=None, checkpoint=None):
    """(model source, run folder) from --run/--checkpoint; the source is an hf_model folder or a .pt file."""
    if checkpoint is not None:
        src = Path(checkpoint)
        if not src.exists():
            raise UploadError(f"checkpoint not found: {src}")
        run_dir = src.parent if src.is_file() or src.name == EXPORT_DIR_NAME else src
        if src.is_dir() and (src / EXPORT_DIR_NAME).is_dir():
            src = src / EXPORT_DIR_NAME
        return src, run_dir
    run_dir = Path(run) if run is not None else DEFAULT_RUN
    if not run_dir.is_dir():
        hint = " (train one with `python train.py`)" if run is None else ""
        raise UploadError(f"run folder not found: {run_dir}{hint}")
    if (run_dir / EXPORT_DIR_NAME / "config.json").is_file():
        return run_dir / EXPORT_DIR_NAME, run_dir
    if (run_dir / CHECKPOINT_NAME).is_file():
        return run_dir / CHECKPOINT_NAME, run_dir
    raise UploadError(f"no model in {run_dir}: expected hf_model/ or {CHECKPOINT_NAME}")


def load_model(src):
    """MusicGenreMoE from an hf_model folder (save_pretrained) or a train.py checkpoint (.pt), in eval mode."""
    from modeling import load_moe_model

    try:
        model = load_moe_model(src)[0]
    except Exception as e:  # corrupt or foreign file: torch, safetensors and json raise many types
        raise UploadError(f"cannot load checkpoint {src}: {type(e).__name__}: {_first_line(e)}") from e
    check_feature_stats(model.config, src)
    return model.eval()


def check_feature_stats(config, src):
    """Refuse a model whose config lacks real training stats (None, non-finite, or identity placeholders)."""
    if not config.has_feature_stats:
        raise UploadError(f"{src}: the config has no feature_mean/feature_std (an untrained model?)")
    mean, std = config.feature_mean, config.feature_std
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise UploadError(f"{src}: feature_std must be finite and > 0, got min {min(std)}")
    if all(v == 0 for v in mean) and all(v == 1 for v in std):
        raise UploadError(f"{src}: feature_mean/feature_std are placeholders (all 0 / all 1), not training stats")


def load_metrics(run_dir):
    from workbench.model_card import MetricsError, check_metrics

    path = Path(run_dir) / "metrics.json"
    if not path.is_file() and not path.is_symlink():
        raise UploadError(f"metrics.json not found in {run_dir}: the model card needs the run's test metrics")
    try:
        metrics = json.loads(run_file(run_dir, "metrics.json").read_text())
        check_metrics(metrics)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UploadError(f"{path} is not valid JSON: {_first_line(e)}") from e
    except MetricsError as e:
        raise UploadError(str(e)) from e
    return metrics


# -- export -------------------------------------------------------------------------------------------


def hub_config(config):
    """The config as the Hub sees it: `auto_map` and `custom_pipelines` added (a copy)."""
    config = config.__class__.from_dict(config.to_dict())
    config.auto_map = dict(AUTO_MAP)
    config.custom_pipelines = json.loads(json.dumps(CUSTOM_PIPELINES))
    return config


def code_files(root=ROOT):
    """Code files the remote loader needs (`modeling.model_code_files`); a missing one is an UploadError."""
    try:
        return model_code_files(root)
    except FileNotFoundError as e:
        raise UploadError(str(e)) from None


def notebook_modules(root=ROOT):
    """NOTEBOOK_MODULES as relative file paths: the commands, and every module of the workbench package."""
    found = []
    for name in NOTEBOOK_MODULES:
        path = Path(root) / name
        found += sorted(p.relative_to(root).as_posix() for p in path.glob("*.py")) if path.is_dir() else [name]
    return found


def write_model_folder(model, folder):
    """What AutoModel, AutoFeatureExtractor and pipeline need to load the model from `folder`, as is:
    `model.save_pretrained` writes it all (config with `auto_map` and `custom_pipelines`, weights,
    preprocessor_config.json, the code files, the musicnn licence). train.py writes a run's
    `hf_model/` with it; the Hub export adds the card, metrics, figures and notebook."""
    model.save_pretrained(folder)


def verify_export(model, folder):
    """Reload the export with the local classes: the same tensors, and the same logits on rows of the
    model's real input width (every input column, the front end's included, near the training mean)."""
    import torch
    from modeling import MusicGenreMoE

    reloaded = MusicGenreMoE.from_pretrained(folder).eval()
    c = model.config
    noise = torch.randn(8, c.input_size, generator=torch.Generator().manual_seed(0))
    x = torch.tensor(c.feature_mean) + torch.tensor(c.feature_std) * noise
    theirs, ours = reloaded.state_dict(), model.state_dict()
    same_tensors = theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    with torch.no_grad():
        same = same_tensors and torch.equal(model.eval()(x).logits, reloaded(x).logits)
    if not same or reloaded.config.feature_mean != c.feature_mean:
        raise UploadError(f"export check failed: the model reloaded from {folder} differs from the run's")


def run_file(run_dir, name):
    """`run_dir/name`, refused (UploadError) when it is a link or resolves outside the run folder: an
    export publishes what the run wrote, never a file of this machine reached through a symlink."""
    run_dir = Path(run_dir)
    path = run_dir / name
    if path.is_symlink() or not path.resolve().is_relative_to(run_dir.resolve()):
        raise UploadError(f"{path}: a symbolic link (to {os.path.realpath(path)}); the export takes only files the "
                          f"run wrote inside {run_dir}: replace the link with the file, or remove it")
    return path


def build_export(src, run_dir, folder, repo_id):
    """Write every file of the Hub repo into `folder` (empty). Returns the list of relative paths."""
    folder = Path(folder)
    model = load_model(src)
    metrics = load_metrics(run_dir)
    write_model_folder(model, folder)
    has_notebook = (ROOT / NOTEBOOK).is_file()
    if has_notebook:
        # The notebook's default REPO_ID becomes this repo, so "Open in Colab" fetches the right code.
        text = (ROOT / NOTEBOOK).read_text(encoding="utf-8")
        write_text(folder / NOTEBOOK, text.replace(NOTEBOOK_REPO_PLACEHOLDER, repo_id))
        for name in notebook_modules():
            if not (folder / name).exists():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, folder / name)
    shutil.copy2(run_file(run_dir, "metrics.json"), folder / "metrics.json")
    figures = [f for f in FIGURES if (Path(run_dir) / f).is_file() or (Path(run_dir) / f).is_symlink()]
    if figures:
        (folder / "figures").mkdir()
        for f in figures:
            shutil.copy2(run_file(run_dir, f), folder / "figures" / f)
    verify_export(model, folder)

    from workbench.model_card import build_model_card

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    card = build_model_card(metrics, hub_config(model.config), repo_id=repo_id,
                            n_parameters=sum(p.numel() for p in model.parameters()),
                            files=[f for f in files if not f.startswith("figures/")],
                            figures=figures, has_notebook=has_notebook)
    write_text(folder / "README.md", str(card))
    return sorted(files + ["README.md"])


def export_run(src, run_dir, output_dir, repo_id, overwrite=False):
    """Build the export in a hidden partial folder beside `output_dir`, then move it into place.

    Partial folders of earlier exports that were killed (SIGKILL leaves them) are removed first.
    A place that cannot hold the export (under a file, unwritable) is one UploadError line.
    """
    output_dir = Path(output_dir)
    problem = unusable_output(output_dir, overwrite)
    if problem == "not empty":
        raise UploadError(f"output folder {output_dir} is not empty (pass --overwrite to replace it)")
    if problem:
        raise UploadError(f"--output-dir {output_dir} {problem}; expected a folder path")
    try:
        tmp = fresh_partial_folder(output_dir, EXPORT_KIND)
    except OSError as e:
        raise UploadError(f"--output-dir {output_dir}: cannot write there ({e.strerror or e})") from e
    try:
        files = build_export(src, run_dir, tmp, repo_id)
        move_into_place(tmp, output_dir, EXPORT_KIND)
    except OSError as e:  # disk full, permissions changed meanwhile: one line, nothing left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise UploadError(f"--output-dir {output_dir}: writing the export failed ({type(e).__name__}: "
                          f"{e.strerror or _first_line(e)})") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


# -- push ---------------------------------------------------------------------------------------------


def resolve_token(explicit):
    """--token, else HF_TOKEN, else the token saved by `hf auth login`."""
    if explicit:
        return explicit
    from huggingface_hub import get_token

    token = get_token()  # reads HF_TOKEN first, then the saved login under HF_HOME
    if not token:
        raise UploadError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")
    return token


def push(folder, files, repo_id, token, private=False):
    """create_repo(exist_ok=True), then one commit holding every exported file. Returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(folder) / f)) for f in files]
    info = api.create_commit(repo_id, operations=operations, repo_type="model",
                             commit_message="Upload music-genre-moe model (weights, code, card, notebook)")
    return info.commit_url


def describe_hub_error(e, token, endpoint):
    """One line for a failed push; the token is never part of it."""
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, HfHubHTTPError) and status in (401, 403):
        text = f"the Hub rejected the token (HTTP {status}): check it has write access"
    elif isinstance(e, HfHubHTTPError):
        text = f"the Hub answered HTTP {status}: {_first_line(e)}"
    elif _is_network_error(e):
        text = f"network failure reaching {endpoint}: {type(e).__name__}: {_first_line(e)}"
    else:
        text = f"push failed: {type(e).__name__}: {_first_line(e)}"
    return text.replace(token, "***") if token else text


def _is_network_error(e):
    """True when `e` (or its cause) is a transport failure: refused, unreachable, DNS, timeout, TLS."""
    transport_libs = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3"}
    seen = e
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError, OSError)):
            return True
        if type(seen).__module__.split(".")[0] in transport_libs and "Status" not in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# -- default config.json ------------------------------------------------------------------------------


def write_default_config(path=ROOT / "config.json"):
    """The repo root's config.json: the default configuration with auto_map and custom_pipelines."""
    from configuration import MusicGenreMoEConfig

    config = hub_config(MusicGenreMoEConfig())
    data = config.to_dict()
    data.pop("transformers_version", None)  # keep the committed file stable across versions
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
