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
import sys
import tempfile
from pathlib import Path

from workbench.hub_export import (UploadError, _first_line, describe_hub_error, export_run, push, resolve_run,
                                  resolve_token, write_default_config)
from workbench.runs import HUB_ID


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
    if not HUB_ID.match(repo_id):
        raise UploadError(f"--repo: expected 'namespace/name', got {repo_id!r}")


def _scrub(text, token):
    return text.replace(token, "***") if token else text


if __name__ == "__main__":
    sys.exit(main())
