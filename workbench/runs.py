"""The run folder train.py writes, and every way of naming a model: resolved and loaded here, once.

A model spec is one of
    a run folder (train.py's: `hf_model/` inside), a `save_pretrained` folder, a folder exported
    by upload_to_hub.py, a `moe_genre_checkpoint.pt`, or a Hub repo id (`owner/name`).
Every one of them loads with this project's own classes, so no downloaded Python runs. A model
whose config names another model type (someone else's code) loads only with
`trust_remote_code=True`, which classify.py and app.py pass only when the user asks for it.
"""

import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from configuration import MusicGenreMoEConfig
from modeling import CHECKPOINT_NAME, EXPORT_DIR_NAME, load_moe_model
from workbench import evaluation, plots
from workbench.atomic_files import fresh_partial_folder, move_into_place, partial_folder, replacing, unusable_output, write_json, write_text
from workbench.data import data_roots, list_data, load_folder, load_synthetic, prepare_splits
from workbench.settings import SettingsError, check_model, public_settings
from workbench.training import build_model, evaluate, fit, novelty_threshold, input_gradient_importance, input_names, model_inputs
from features import SAMPLE_RATE

#: A Hub repo id: `owner/name` (letters, digits, `-_.`), the one rule every command uses.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelSpecError(ValueError):
    """A model spec that names no loadable model: one line naming the spec and what was expected."""


# -- model specs ------------------------------------------------------------------------------------


def resolve_model_spec(spec):
    """("local", path) or ("hub", repo id) for a model spec; ModelSpecError when it is neither.

    A local folder must hold config.json, `hf_model/` or the seed's checkpoint; a local file must
    be a `.pt` checkpoint. Anything that is not an existing path and looks like `owner/name` is a
    Hub id.
    """
    spec = str(spec)
    p = Path(spec).expanduser()
    if p.is_dir():
        if any((p / name).is_file() for name in ("config.json", f"{EXPORT_DIR_NAME}/config.json", CHECKPOINT_NAME)):
            return "local", str(p.resolve())
        raise ModelSpecError(f"{spec}: folder holds no model (expected config.json, {EXPORT_DIR_NAME}/ or "
                             f"{CHECKPOINT_NAME})")
    if p.is_file():
        if p.suffix != ".pt":
            raise ModelSpecError(f"{spec}: expected a .pt checkpoint, a model folder or a Hub id, got a "
                                 f"{p.suffix or 'plain'} file")
        return "local", str(p.resolve())
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return "hub", spec
    raise ModelSpecError(f"{spec}: no such file or folder, and not a Hub id (owner/name)")


def _local_config_dir(path):
    """The folder whose config.json a local spec loads, or None for a `.pt` checkpoint."""
    path = Path(path)
    if path.is_file():
        return None
    if not (path / "config.json").is_file() and (path / EXPORT_DIR_NAME / "config.json").is_file():
        return path / EXPORT_DIR_NAME
    return path if (path / "config.json").is_file() else None


def _foreign_model_type(config_dir):
    """The model_type of a config.json that is not this project's, else None."""
    try:
        model_type = json.loads((Path(config_dir) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelSpecError(f"{config_dir}/config.json: unreadable ({type(e).__name__}: {e})") from None
    return None if model_type == MusicGenreMoEConfig.model_type else model_type


def load_model(spec, trust_remote_code=False, revision=None):
    """The model in eval mode, from any spec `resolve_model_spec` accepts.

    This project's models (run folders, exports, Hub repos it published) load with the local
    classes: the weights and config are read, the repo's own Python is not run. With
    `trust_remote_code=True` the model's own code runs (`AutoModel`), pinned to `revision` when
    given. Errors are ModelSpecError naming the spec.
    """
    kind, target = resolve_model_spec(spec)
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load (and per Ray worker) is noise
    try:
        if trust_remote_code:
            from transformers import AutoModel

            target = _local_config_dir(target) or target if kind == "local" else target
            model = AutoModel.from_pretrained(str(target), trust_remote_code=True, revision=revision)
        elif kind == "local":
            foreign = _foreign_model_type(_local_config_dir(target)) if _local_config_dir(target) else None
            if foreign is not None:
                raise ModelSpecError(f"{spec}: config.json names model_type {foreign!r}, not "
                                     f"{MusicGenreMoEConfig.model_type!r}: its own code would have to run; pass "
                                     f"--trust-remote-code if you trust it")
            model = load_moe_model(target)[0]
        else:
            from modeling import MusicGenreMoE

            model = MusicGenreMoE.from_pretrained(target, revision=revision)
    except ModelSpecError:
        raise
    except Exception as exc:  # torch, safetensors, transformers and the Hub raise many types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (" (a model of another type? pass --trust-remote-code if you trust its code)"
                if kind == "hub" and not trust_remote_code else "")
        raise ModelSpecError(f"{spec}: cannot load ({type(exc).__name__}: {msg}){hint}") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.eval()
    c = model.config
    if getattr(c, "feature_mean", None) is None or getattr(c, "feature_std", None) is None:
        raise ModelSpecError(f"{spec}: the config has no feature_mean/feature_std (an untrained model?)")
    return model


# -- the run folder ---------------------------------------------------------------------------------


RUN_KIND = "run"  # run folders are built in .run-partial-<name>-<pid>-<random> beside --out


def check_out(out, overwrite, data_dirs=None):
    """Refuse an --out that names a file, a non-empty folder without --overwrite, or a place inside a
    data folder (the run would become a genre sub-folder of the next run's data), before any work."""
    out = Path(out)
    for d in data_dirs or ():
        root = Path(d).expanduser().resolve()
        if out.expanduser().resolve().is_relative_to(root):
            raise SettingsError(f"--out {out} is inside --data-dir {d}: the run folder would be read as a genre "
                                f"of recordings next time; write it elsewhere (e.g. runs/)")
    problem = unusable_output(out, overwrite)
    if problem == "not empty":
        raise SettingsError(f"--out {out} already holds files (a previous run?); pass --overwrite to replace it "
                            f"or choose another --out")
    if problem:
        raise SettingsError(f"--out {out} {problem}; expected a folder path")


def write_run(s, log=print):
    """Train, evaluate and write the run folder for settings `s`. Returns the metrics dict (also in metrics.json).

    Every flag and the data it names are checked before any feature extraction. The run is built
    in a hidden sibling of --out and renamed into place when complete, so --out never holds half a
    run or figures of another run; partial folders of killed runs are removed here.
    """
    t0 = time.perf_counter()
    timings = {}
    out = Path(s.out)
    check_out(out, s.overwrite, s.data_dir)
    genres, paths, labels = list_data(s)
    check_model(s, genres)
    try:
        tmp = fresh_partial_folder(out, RUN_KIND)
    except OSError as e:
        raise SettingsError(f"--out {out}: cannot create the run folder there ({e.strerror or e})") from e
    try:
        torch.manual_seed(s.seed)
        synthetic = s.data_dir is None and not s.dataset
        data = load_synthetic(s, genres) if synthetic else load_folder(s, (paths, labels, genres))
        timings["data_and_features_s"] = time.perf_counter() - t0
        for path, reason in data.skipped:
            log(f"skipped {path}: {reason}")
        metrics = train_and_write(tmp, data, s, timings, t0, log)
        try:
            check_out(out, s.overwrite)  # another process may have written --out meanwhile
        except SettingsError:
            # Neither the finished run nor what appeared in --out may be lost: keep ours beside it.
            kept = out.with_name(f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            os.rename(tmp, kept)
            raise SettingsError(f"--out {out} was filled by someone else during training; this run was kept "
                                f"in {kept}") from None
        move_into_place(tmp, out, RUN_KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"run written to {out.resolve()}")
    return metrics


def train_and_write(folder, data, s, timings, t0, log=print):
    """Everything after the features: split, train, evaluate, save and plot into `folder`."""
    genres = data.genres
    sp = prepare_splits(data, s)
    log(f"data: {'synthetic' if data.source == 'synthetic' else '+'.join(r.name for r in data_roots(data))}, {len(genres)} genres, "
        f"tracks train/val/test {'/'.join(str(len(p)) for p in sp.tracks)}, "
        f"windows {'/'.join(str(len(r)) for r in sp.rows)}")
    model = build_model(genres, sp.mean, sp.std, s)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters, {model.config.expert_type} experts")
    inputs = model_inputs(sp)
    t1 = time.perf_counter()
    history, best_epoch = fit(model, inputs[0], inputs[1], s, log=log)
    timings["training_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    set_centroids_and_novelty(model, data, sp, s, log)
    metrics, (y, probs, gates, logits, val_logits) = evaluate(model, data, sp.tracks, inputs, genres)
    train_rows = sp.rows[0]
    model.set_genre_prototypes(torch.from_numpy(data.features[train_rows]), data.labels[train_rows],
                               (data.tracks[train_rows], sp.groups[data.tracks[train_rows]]))
    metrics |= {
        "n_parameters": n_params, "best_epoch": best_epoch, "epochs_run": len(history["train_loss"]),
        "dataset": dataset_summary(data, s, sp),
        "train_args": public_settings(s),
    }
    save_run(folder, model, s, metrics, history, sp.mean, sp.std, genres)
    timings["evaluation_s"] = time.perf_counter() - t2
    if s.plots:
        t3 = time.perf_counter()
        write_figures(folder, model, data, inputs, history, best_epoch, metrics, (y, probs, gates, logits), genres, s)
        timings["figures_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    metrics["timings"] = timings
    write_json(folder / "metrics.json", metrics, indent=2)
    log(f"test accuracy {metrics['test_accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
        f"mean self-activation {metrics['mean_self_activation']:.3f}  ({timings['total_s']:.1f} s)")
    return metrics


def set_centroids_and_novelty(model, data, sp, s, log=print):
    """The genre centroids of the training tracks (artist-weighted: `--artists`) and the novelty
    threshold calibrated on them out of fold by artist, stored in the model's config."""
    groups = sp.groups[data.tracks]
    rows = sp.rows[0]
    x, labels, tracks = torch.from_numpy(data.features[rows]), data.labels[rows], data.tracks[rows]
    model.config.novelty_threshold = novelty_threshold(model, x, labels, tracks, groups[rows], seed=s.seed)
    model.set_genre_centroids(x, labels, (tracks, groups[rows]))
    n_artists = len(set(groups[rows]))
    log(f"genre centroids from {len(np.unique(tracks))} training songs by {n_artists} artist groups; novelty "
        f"threshold {model.config.novelty_threshold if model.config.novelty_threshold is None else round(model.config.novelty_threshold, 4)}")


def dataset_summary(data, s, sp):
    """What metrics.json says about the data: names relative to the data folder, no path of this machine."""
    synthetic = data.source == "synthetic"
    roots = [] if synthetic else data_roots(data)
    return {"name": "synthetic" if synthetic else "+".join(r.name for r in roots),
            "source": "synthetic" if synthetic else "dataset" if s.dataset else "data-dir",
            "genres": list(data.genres),
            "n_tracks": [len(p) for p in sp.tracks], "n_windows": [len(r) for r in sp.rows],
            "split": f"stratified by {'clip' if synthetic else 'artist (--artists)' if s.artists else 'recording'}, "
                     f"proportions {s.split} (train,val,test), seed {s.seed}",
            "skipped": [[_relative(p, roots), _relative_text(r, roots)] for p, r in data.skipped]}


def _relative(path, roots):
    """A recording's path relative to its data folder (prefixed with the folder's name when several)."""
    for root in roots:
        try:
            rel = Path(path).relative_to(root).as_posix()
        except ValueError:
            continue
        return rel if len(roots) == 1 else f"{root.name}/{rel}"
    return Path(path).name


def _relative_text(text, roots):
    """An error message with the data folders' absolute paths cut out (decoders name the file)."""
    for root in roots:
        for prefix in {str(root), str(root.resolve())}:
            text = text.replace(prefix + os.sep, "" if len(roots) == 1 else root.name + "/").replace(prefix, root.name)
    return text


def save_run(out, model, s, metrics, history, mean, std, genres):
    """The run's model files and records in `out`, each written atomically.

    The weights are written once, in `hf_model/` (`save_pretrained` plus the code files, by the
    Hub export's own function: AutoModel and pipeline load it as is), and once more in the seed's
    `moe_genre_checkpoint.pt` for the seed notebook's `load_moe_model` users. The checkpoint holds
    only tensors and plain Python types (weights, config as a dict, stats as tensors, genres,
    settings), so `torch.load(..., weights_only=True)` reads it.
    """
    from workbench.hub_export import write_model_folder

    out = Path(out)
    config = json.loads(model.config.to_json_string())  # plain JSON types only
    with replacing(out / CHECKPOINT_NAME) as tmp:
        torch.save({"model_state_dict": model.state_dict(), "config": config,
                    "feat_mean": torch.as_tensor(np.asarray(mean, np.float32)),
                    "feat_std": torch.as_tensor(np.asarray(std, np.float32)),
                    "genres": [str(g) for g in genres], "train_args": json.loads(json.dumps(dataclasses.asdict(s)))},
                   tmp)
    hf_tmp = partial_folder(out / EXPORT_DIR_NAME, RUN_KIND)
    try:
        write_model_folder(model, hf_tmp)
        move_into_place(hf_tmp, out / EXPORT_DIR_NAME, RUN_KIND)
    except BaseException:
        shutil.rmtree(hf_tmp, ignore_errors=True)
        raise
    write_json(out / "train_args.json", dataclasses.asdict(s), indent=2)
    write_json(out / "history.json", history)
    write_json(out / "metrics.json", metrics, indent=2)
    write_text(out / "classification_report.txt", classification_report(metrics, genres))


def classification_report(metrics, genres):
    lines = [f"{'genre':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'roc_auc':>10}{'self_act':>10}{'support':>9}"]
    for g in genres:
        r = metrics["per_genre"][g]
        lines.append(f"{g:<12}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1']:>10.3f}{r['roc_auc']:>10.3f}"
                     f"{metrics['self_activation'][g]:>10.3f}{r['support']:>9d}")
    lo, hi = metrics["test_accuracy_ci95"]
    lines += ["", f"accuracy {metrics['test_accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f})   macro F1 {metrics['macro_f1']:.4f}"]
    if "track_level" in metrics:
        t = metrics["track_level"]
        lines.append(f"track level ({t['n_tracks']} recordings): accuracy {t['test_accuracy']:.4f} "
                     f"(95% CI {t['test_accuracy_ci95'][0]:.3f}-{t['test_accuracy_ci95'][1]:.3f})  macro F1 {t['macro_f1']:.4f}")
    skipped = metrics.get("dataset", {}).get("skipped", [])
    if skipped:
        lines += ["", f"skipped {len(skipped)} unreadable recording(s):"] + [f"  {p}: {r}" for p, r in skipped]
    return "\n".join(lines) + "\n"


def write_figures(out, model, data, inputs, history, best_epoch, metrics, test, genres, s):
    y, probs, gates, logits = test
    gm = evaluation.gate_matrix(y, gates, len(genres))
    plots.genre_spectrograms(data.examples, SAMPLE_RATE, out / "genre_spectrograms.png")
    plots.training_curves(history, best_epoch, out / "training_curves.png", ema_decay=s.ema_decay)
    t = metrics.get("track_level")  # the matrix counts windows; say so where they are not whole clips
    unit = (f"{metrics['test_n']} windows of {t['n_tracks']} recordings" if t else f"{metrics['test_n']} clips")
    plots.confusion_matrix(metrics["confusion_matrix"], genres, out / "confusion_matrix.png",
                           title=f"Test confusion matrix ({unit})")
    plots.expert_gates(gm, metrics["self_activation"], genres, out / "expert_gates.png")
    plots.roc_curves(y, probs, genres, out / "roc_curves.png")
    plots.radar_charts(gm, genres, out / "radar_charts.png")
    importance = input_gradient_importance(model, *inputs[2])
    names, groups = input_names(model.config)
    plots.feature_importance(importance, names, groups, out / "feature_importance.png")
    cal = metrics["calibration"]
    centres, acc, counts = evaluation.reliability_curve(y, probs)
    _, acc_t, _ = evaluation.reliability_curve(y, evaluation.softmax(logits, cal["temperature"]))
    plots.reliability_diagram(centres, acc, counts, acc_t, cal["temperature"], out / "calibration.png")
