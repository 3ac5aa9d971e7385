"""Export a training run as a Hugging Face Hub model repo, and push it in one commit.

    python upload_to_hub.py --output-dir hub_export                 # export runs/latest, no push
    python upload_to_hub.py --repo user/music-genre-moe             # export and push (one commit)
    python upload_to_hub.py --repo user/music-genre-moe --run runs/gtzan --private --token hf_...
    python upload_to_hub.py --write-default-config                  # regenerate the repo's config.json

The export holds: config.json (the run's real feature_mean/feature_std, `auto_map` for AutoConfig,
AutoModel and AutoModelForAudioClassification, `custom_pipelines` for the audio pipeline),
model.safetensors (pytorch_model.bin only without safetensors), preprocessor_config.json (the
feature extractor, `auto_map` for AutoFeatureExtractor), every code file the remote loader needs,
walkthrough.ipynb when the repo has it, metrics.json, the run's figures and a README.md model card
with the run's test metrics. The token (--token, else HF_TOKEN, else the saved login) is never printed.
Any failure ends with one line on stderr and exit code 1; a half-written export is never left behind.
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from atomic_files import clean_stale_partials, move_into_place, partial_folder, replacing, unusable_output, write_text

ROOT = Path(__file__).resolve().parent
EXPORT_KIND = "out"  # exports are built in .out-partial-<name>-<pid>-<random> beside --output-dir
DEFAULT_RUN = ROOT / "runs" / "latest"
CHECKPOINT_NAME = "moe_genre_checkpoint.pt"

# One key per Auto class, written explicitly (register_for_auto_class keeps only the last call).
AUTO_MAP = {
    "AutoConfig": "configuration.MusicGenreMoEConfig",
    "AutoModel": "modeling.MusicGenreMoE",
    "AutoModelForAudioClassification": "modeling.MusicGenreMoE",
}
FEATURE_EXTRACTOR_AUTO_MAP = {"AutoFeatureExtractor": "pipeline.MusicGenreFeatureExtractor"}
# pipeline(model=..., trust_remote_code=True) takes the task from here when there is one entry, and
# task="audio-classification" picks this class instead of the stock (ffmpeg/torchaudio) pipeline.
CUSTOM_PIPELINES = {
    "audio-classification": {
        "impl": "pipeline.MusicGenreClassificationPipeline",
        "pt": ["AutoModelForAudioClassification"],
        "tf": [],
        "type": "audio",
    }
}
# Modules the remote loader imports; their `from .x import` siblings are added by `code_files`.
ENTRY_MODULES = ("configuration.py", "modeling.py", "pipeline.py")
MUSICNN_LICENSE = "LICENSE-musicnn"  # ISC notice of the musicnn weights (frontend.py)
NOTEBOOK = "walkthrough.ipynb"
# The notebook's own imports beyond the model's code, shipped with it (with their sibling imports,
# see `notebook_modules`) so that Colab can fetch them: its first cell runs
# snapshot_download(allow_patterns=["*.py", "config.json"]).
NOTEBOOK_MODULES = ("synth.py", "evaluation.py", "plots.py", "train.py", "upload_to_hub.py", "model_card.py")
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
        run_dir = src.parent if src.is_file() or src.name == "hf_model" else src
        if src.is_dir() and (src / "hf_model").is_dir():
            src = src / "hf_model"
        return src, run_dir
    run_dir = Path(run) if run is not None else DEFAULT_RUN
    if not run_dir.is_dir():
        hint = " (train one with `python train.py`)" if run is None else ""
        raise UploadError(f"run folder not found: {run_dir}{hint}")
    if (run_dir / "hf_model" / "config.json").is_file():
        return run_dir / "hf_model", run_dir
    if (run_dir / CHECKPOINT_NAME).is_file():
        return run_dir / CHECKPOINT_NAME, run_dir
    raise UploadError(f"no model in {run_dir}: expected hf_model/ or {CHECKPOINT_NAME}")


def load_model(src):
    """MusicGenreMoE from an hf_model folder (save_pretrained) or a train.py checkpoint (.pt)."""
    from configuration import MusicGenreMoEConfig
    from modeling import MusicGenreMoE

    try:
        if Path(src).is_dir():
            model = MusicGenreMoE.from_pretrained(src)
        else:
            model = _model_from_checkpoint(src, MusicGenreMoEConfig, MusicGenreMoE)
    except UploadError:
        raise
    except Exception as e:  # corrupt or foreign file: torch, safetensors and json raise many types
        raise UploadError(f"cannot load checkpoint {src}: {type(e).__name__}: {_first_line(e)}") from e
    check_feature_stats(model.config, src)
    return model.eval()


def _model_from_checkpoint(path, config_class, model_class):
    import torch

    # train.py's checkpoint holds only tensors and plain types: weights_only reads it and refuses
    # any other pickled object (which could run code) instead of executing it.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"model_state_dict", "config"} - set(ckpt if isinstance(ckpt, dict) else ())
    if missing:
        raise UploadError(f"checkpoint {path}: expected keys model_state_dict and config, missing {sorted(missing)}")
    cfg = dict(ckpt["config"])
    for key, ckpt_key in (("feature_mean", "feat_mean"), ("feature_std", "feat_std")):
        if cfg.get(key) is None and ckpt.get(ckpt_key) is not None:
            cfg[key] = [float(v) for v in ckpt[ckpt_key]]
    model = model_class(config_class.from_dict(cfg))
    model.load_state_dict(ckpt["model_state_dict"], strict=True)
    return model


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
    from model_card import MetricsError, check_metrics

    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise UploadError(f"metrics.json not found in {run_dir}: the model card needs the run's test metrics")
    try:
        metrics = json.loads(path.read_text())
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
    """Code files the remote loader needs: the entry modules and, transitively, their `from .x import`s."""
    todo, found = list(ENTRY_MODULES), []
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        path = Path(root) / name
        if not path.is_file():
            raise UploadError(f"{name} is missing from {root}: the Hub loader needs it")
        found.append(name)
        # The same patterns transformers' dynamic-module loader follows.
        text = path.read_text(encoding="utf-8")
        todo += [f"{m.split('.')[0]}.py" for m in re.findall(r"^\s*from\s+\.(\S+)\s+import", text, re.M)]
        todo += [f"{m.split('.')[0]}.py" for m in re.findall(r"^\s*import\s+\.(\S+)\s*$", text, re.M)]
    return found


def notebook_modules(root=ROOT):
    """NOTEBOOK_MODULES and, transitively, every sibling module they import (absolute or relative)."""
    todo, found = list(NOTEBOOK_MODULES), []
    while todo:
        name = todo.pop(0)
        path = Path(root) / name
        if name in found or not path.is_file():
            continue
        found.append(name)
        text = path.read_text(encoding="utf-8")
        imported = re.findall(r"^\s*(?:from\s+\.?|import\s+)(\w+)", text, re.M)
        todo += [f"{m}.py" for m in imported if (Path(root) / f"{m}.py").is_file()]
    return found


def _safetensors_available():
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def save_weights(model, folder):
    """config.json + model.safetensors (or pytorch_model.bin when safetensors is missing).

    The saved config carries `auto_map` and `custom_pipelines`; the model in memory keeps its own.
    """
    own = model.config
    model.config = hub_config(own)
    try:
        if _safetensors_available():
            model.save_pretrained(folder)
        else:
            import torch

            model.config.save_pretrained(folder)
            with replacing(Path(folder) / "pytorch_model.bin") as tmp:
                torch.save(model.state_dict(), tmp)
    finally:
        model.config = own


def write_model_folder(model, folder):
    """What AutoModel, AutoFeatureExtractor and pipeline need to load the model from `folder`, as is:
    config.json with `auto_map` and `custom_pipelines`, the weights, preprocessor_config.json and
    the code files. train.py writes a run's `hf_model/` with it; the Hub export adds the card,
    metrics, figures and notebook."""
    folder = Path(folder)
    save_weights(model, folder)
    save_feature_extractor(model.config, folder)
    for name in code_files():
        shutil.copy2(ROOT / name, folder / name)
    if model.config.frontend == "musicnn":  # the converted weights ship inside model.safetensors: so does their licence
        shutil.copy2(ROOT / MUSICNN_LICENSE, folder / MUSICNN_LICENSE)


def save_feature_extractor(config, folder):
    from pipeline import MusicGenreFeatureExtractor

    fe = MusicGenreFeatureExtractor.for_config(config)
    fe.save_pretrained(folder)
    path = Path(folder) / "preprocessor_config.json"
    data = json.loads(path.read_text())
    data["auto_map"] = dict(FEATURE_EXTRACTOR_AUTO_MAP)
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def verify_export(model, folder):
    """Reload the export with the local classes and compare logits with the model in memory."""
    import torch
    from modeling import MusicGenreMoE

    reloaded = MusicGenreMoE.from_pretrained(folder).eval()
    x = torch.randn(8, model.config.num_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.equal(model.eval()(x).logits, reloaded(x).logits)
    if not same or reloaded.config.feature_mean != model.config.feature_mean:
        raise UploadError(f"export check failed: the model reloaded from {folder} differs from the run's")


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
                shutil.copy2(ROOT / name, folder / name)
    shutil.copy2(Path(run_dir) / "metrics.json", folder / "metrics.json")
    figures = [f for f in FIGURES if (Path(run_dir) / f).is_file()]
    if figures:
        (folder / "figures").mkdir()
        for f in figures:
            shutil.copy2(Path(run_dir) / f, folder / "figures" / f)
    verify_export(model, folder)

    from model_card import build_model_card

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
        clean_stale_partials(output_dir.parent, EXPORT_KIND)
        tmp = partial_folder(output_dir, EXPORT_KIND)
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


# -- CLI ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", help="Hub repo id, e.g. user/music-genre-moe (required to push)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="run folder written by train.py (default: runs/latest)")
    src.add_argument("--checkpoint", help="moe_genre_checkpoint.pt or an hf_model/ folder; "
                                          "metrics.json is read from its run folder")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN, else the saved login); never printed")
    p.add_argument("--output-dir", help="export here; without --repo nothing is pushed")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    p.add_argument("--write-default-config", action="store_true",
                   help="write the repo root's config.json (default config + auto_map) and exit")
    args = p.parse_args(argv)
    if not (args.repo or args.output_dir or args.write_default_config):
        p.error("nothing to do: pass --repo to push, --output-dir to export, or --write-default-config")
    return args


def main(argv=None):
    args = parse_args(argv)
    _quiet_progress_bars()
    if args.write_default_config:
        print(f"wrote {write_default_config()}")
        return 0
    token = None
    try:
        if args.repo:  # fail before the slow export when the push cannot happen
            _check_repo_id(args.repo)
            token = resolve_token(args.token)
        src, run_dir = resolve_run(args.run, args.checkpoint)
        repo_id = args.repo or "your-username/music-genre-moe"
        if args.output_dir:
            files = export_run(src, run_dir, args.output_dir, repo_id, overwrite=args.overwrite)
            print(f"exported {len(files)} files to {args.output_dir}")
            if args.repo:
                print(push_folder(args.output_dir, files, args, token))
        else:
            with tempfile.TemporaryDirectory(prefix="hub-export-") as tmp:
                files = export_run(src, run_dir, Path(tmp) / "export", repo_id)
                print(push_folder(Path(tmp) / "export", files, args, token))
    except UploadError as e:
        print(f"error: {_scrub(str(e), token)}", file=sys.stderr)
        return 1
    except OSError as e:  # an unreadable run file, a full disk: the promised one line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {_scrub(f'{type(e).__name__}{where}: {e.strerror or _first_line(e)}', token)}", file=sys.stderr)
        return 1
    return 0


def push_folder(folder, files, args, token):
    from huggingface_hub import constants

    try:
        url = push(folder, files, args.repo, token, private=args.private)
    except Exception as e:
        raise UploadError(describe_hub_error(e, token, constants.ENDPOINT)) from e
    return f"pushed {len(files)} files to {args.repo} in one commit: {url}"


def _quiet_progress_bars():
    """Keep the output to result lines (and the one error line): no download/upload bars."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()


def _check_repo_id(repo_id):
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise UploadError(f"--repo: expected 'namespace/name', got {repo_id!r}")


def _scrub(text, token):
    return text.replace(token, "***") if token else text


if __name__ == "__main__":
    sys.exit(main())
