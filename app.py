"""A Gradio demo: a song in; its genre, the genre across the song and the experts' routing out.

    python app.py                                     # the model in runs/latest (python train.py writes it)
    python app.py --model runs/gtzan5 --port 7861     # a run folder, save_pretrained folder, export or .pt
    python app.py --model you/music-genre-moe         # a Hub repo id (loaded with this project's classes)
    MUSIC_GENRE_MOE_MODEL=hub_export python app.py    # the same through the environment
    python app.py --write-space space/ --model you/music-genre-moe   # a Hugging Face Space folder

It binds 127.0.0.1 unless told otherwise (`--host`, or GRADIO_SERVER_NAME as Spaces set it) and needs
no network with a local model. `pip install -r requirements-app.txt` installs Gradio beside the
model's own requirements; the model package itself does not need Gradio.
"""

import argparse
import copy
import logging
import os
import re
import shutil
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the demo works offline

import numpy as np

import matplotlib.figure  # noqa: E402
from decoding import AUDIO_EXTENSIONS  # noqa: E402
from workbench import plots, runs  # noqa: E402  (plots sets the Agg backend)

HERE = Path(__file__).resolve().parent
ENV_VAR = "MUSIC_GENRE_MOE_MODEL"
DEFAULT_MODEL = "runs/latest"
EXAMPLES_DIR = HERE / "examples"
TRUST_ENV_VAR = "MUSIC_GENRE_MOE_TRUST_REMOTE_CODE"  # "1": run the model repo's own code (a Space's setting)
log = logging.getLogger("music-genre-moe.app")

READ_LABEL = ("The bars are the song's genre probabilities: the mean of the model's probabilities over "
              "all its {seconds:g}-second windows.")
READ_TIMELINE = ("Each column is one window of the song and its colours stack that window's genre "
                 "probabilities (they add up to 1): where one colour takes over, the music changed character; "
                 "gaps are silent stretches the model skipped.")
READ_GATES = ("Each row is one expert (expert *i* was trained to serve genre *i*) and each column one window: "
              "the brighter the cell, the more the gate trusted that expert's opinion there.")


# -- the model ---------------------------------------------------------------------------------------


def default_model_source():
    """The model to serve when no --model is given: the env var, a Space card's `models:` entry, runs/latest."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    card = HERE / "README.md"
    if card.is_file():
        meta = re.match(r"^---\n(.*?)\n---", card.read_text(encoding="utf-8"), re.S)
        if meta and re.search(r"^sdk:\s*gradio\s*$", meta.group(1), re.M):
            repo = re.search(r"^models:\s*\n\s*-\s*(\S+)", meta.group(1), re.M)
            if repo:
                return repo.group(1)
    return DEFAULT_MODEL


def load_model(source, trust_remote_code=False, revision=None):
    """Any model spec `workbench.runs.load_model` takes -> the model, in eval mode.

    This project's models load with the local classes (no downloaded code runs); a model with its
    own code runs it only with `trust_remote_code` (--trust-remote-code, or TRUST_ENV_VAR=1 in a Space).
    """
    source = str(source)
    if source == DEFAULT_MODEL and not Path(source).exists():
        raise FileNotFoundError(f"{source}: no trained model here (train one with `python train.py`, or pass "
                                f"--model or set {ENV_VAR})")
    return runs.load_model(source, trust_remote_code=trust_remote_code, revision=revision)


def genres_of(model):
    return list(model.config.genres)


def few_shot_support(model):
    """(True, "") when `add_genre` can teach this model a genre, else (False, the reason)."""
    if not hasattr(model, "add_genre"):
        return False, "this model's code has no `add_genre` (it predates few-shot genres)."
    protos = getattr(model.config, "prototypes", None) or {}
    missing = [g for g in genres_of(model) if g not in protos]
    if missing:
        return False, ("the trained genres have no prototypes in its config (missing: " + ", ".join(missing) +
                       "), so a new genre would have nothing to compete with. Retrain it with this "
                       "project's `train.py`, which stores them.")
    return True, ""


# -- classification ------------------------------------------------------------------------------------


def readable_error(exc, path=None, name=None):
    """One line a person can act on: the upload's own name instead of Gradio's temporary path, no traceback."""
    text = str(exc).strip() or type(exc).__name__
    if path and name:
        text = text.replace(str(path), name)
    text = text.splitlines()[0]
    if type(exc).__name__ in ("AudioError", "ValueError", "FileNotFoundError", "KeyError"):
        return text.strip("'\"")
    return f"{text} ({type(exc).__name__})"


def md_text(text):
    """Plain text shown literally in a Markdown component (file names hold `_` and `*`; no HTML)."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", str(text))


def analyse(model, path):
    """`model.predict_audio(path)`; raises what it raises (AudioError for unusable audio)."""
    return model.predict_audio(str(path))


def gate_heatmap(windows, experts, title="Which expert the gate trusted, window by window"):
    """Experts x time image of the per-window gate weights (a Figure), or None without them.

    Same width, margins and time axis as `plots.genre_timeline`, so the two line up on the page.
    """
    if not windows or "gate_weights" not in windows[0]:
        return None
    weights = np.array([[float(w["gate_weights"].get(e, 0.0)) for e in experts] for w in windows])
    starts = np.array([float(w["start"]) for w in windows])
    widths = np.array([float(w["end"]) - float(w["start"]) for w in windows])
    cmap, norm = matplotlib.colormaps["viridis"], matplotlib.colors.Normalize(0, 1)
    fig = matplotlib.figure.Figure(figsize=(9, 0.42 * len(experts) + 1.3))  # outside pyplot: thread-safe
    ax = fig.subplots()
    for row, expert in enumerate(experts):  # one row of cells per expert, the first at the top
        ax.bar(starts, 1, width=widths, bottom=len(experts) - 1 - row, align="edge",
               color=cmap(norm(weights[:, row])), edgecolor="white", linewidth=0.3)
    end = float((starts + widths).max())
    ticks = np.unique(np.concatenate([starts, starts + widths]))  # window edges
    step = max(1, int(np.ceil(len(ticks) / 12)))
    ax.set_xticks(ticks[::step], [f"{int(t // 60)}:{int(t % 60):02d}" for t in ticks[::step]])
    ax.set_yticks(np.arange(len(experts)) + 0.5, [f"{e} expert" for e in experts][::-1])
    ax.set(xlim=(0, end), ylim=(0, len(experts)), xlabel="time in the song (m:ss)", title=title)
    fig.subplots_adjust(left=0.17, right=0.83, bottom=0.8 / fig.get_figheight(), top=1 - 0.35 / fig.get_figheight())
    box = ax.get_position()
    cax = fig.add_axes([box.x1 + 0.015, box.y0, 0.015, box.height])
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, label="gate weight")
    return fig


def summary(result, name, genres):
    top = result["predicted_genre"]
    windows = result["windows"]
    span = f"{windows[0]['start']:.0f}-{windows[-1]['end']:.0f} s" if windows else ""
    text = (f"**{md_text(name)}**: **{top}** ({result['confidence']:.0%} confidence), "
            f"from {result['num_windows']} window{'s' * (result['num_windows'] != 1)} ({span}).")
    gates = result.get("gate_weights") or {}
    if gates:
        expert = max(gates, key=gates.get)
        text += f" The gate leaned most on the **{expert}** expert ({gates[expert]:.2f} on average)."
    if windows and "gate_weights" not in windows[0]:
        text += " (This model's code reports no per-window gate weights, so the routing plot stays empty.)"
    if result.get("known") is False:
        text += (f" **None of these?** It sounds unlike every genre this model was trained on (novelty "
                 f"{result['novelty']:.2f}, above its threshold): treat the genre above as a guess.")
    if result.get("tags"):
        text += " The front end hears: " + ", ".join(f"{md_text(tag)} {p:.0%}" for tag, p in
                                                    list(result["tags"].items())[:5]) + "."
    if "prototype_scores" in result:
        added = [g for g in result["prototype_scores"] if g not in genres]
        text += (" Genres taught in this session (" + ", ".join(added) + ") compete by distance to their "
                 "examples: the bars show those prototype scores.")
    return text


def classify(audio_path, session_model, model):
    """The Classify event: (status markdown, label dict, timeline figure, gate figure)."""
    if not audio_path:
        return "Upload or record a song, or pick an example.", None, None, None
    name = Path(audio_path).name
    active = session_model or model
    try:
        result = analyse(active, audio_path)
    except Exception as exc:  # noqa: BLE001: every failure becomes a message in the page
        log.info("classify %s failed", name, exc_info=True)
        msg = readable_error(exc, audio_path, name)
        msg = msg[len(name) + 2:] if msg.startswith(name + ": ") else msg  # the headline names it already
        return f"**Could not classify {md_text(name)}:** {md_text(msg)}", None, None, None
    genres = genres_of(active)
    scores = result.get("prototype_scores") or result["probabilities"]
    timeline = plots.genre_timeline(result["windows"], genres)
    gates = gate_heatmap(result["windows"], genres)
    return summary(result, name, genres), {g: float(p) for g, p in scores.items()}, timeline, gates


def learn_genre(genre, files, session_model, model):
    """The Teach event: (status markdown, this session's model copy with the new genre)."""
    genre = (genre or "").strip()
    active = session_model or model
    if not genre:
        return "Name the new genre first.", session_model
    if genre in active.config.label2id or genre in (active.config.prototypes or {}):
        return f"**{md_text(genre)}** is already a genre of this model: pick another name.", session_model
    paths = [getattr(f, "name", f) for f in (files or [])]
    if not paths:
        return "Add at least one example recording of the genre (more is better: 3-5 songs).", session_model
    learner = copy.deepcopy(active)  # per visitor: one person's genres never leak into another's page
    try:
        learner.add_genre(genre, [str(p) for p in paths])
    except Exception as exc:  # noqa: BLE001
        bad = next((p for p in paths if str(p) in str(exc)), None)
        msg = readable_error(exc, bad, Path(bad).name if bad else None)
        return f"**Could not learn {md_text(genre)}:** {md_text(msg)}", session_model
    added = [g for g in learner.config.prototypes if g not in learner.config.label2id]
    return (f"Learned **{md_text(genre)}** from {len(paths)} recording{'s' * (len(paths) != 1)}. "
            f"Songs you classify now also compete with: {', '.join(added)} (this browser session only)."), learner


# -- the page ------------------------------------------------------------------------------------------


def example_files():
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)


def build_demo(model, title="music-genre-moe"):
    """The Gradio Blocks page around `model` (anything with `predict_audio` and a genre config)."""
    import gradio as gr

    genres = genres_of(model)
    fewshot_ok, why_not = few_shot_support(model)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        session_model = gr.State(None)  # set once a visitor teaches a genre: their own copy of the model
        gr.Markdown(f"# {title}\nA Mixture-of-Experts genre classifier: one expert per genre "
                    f"({', '.join(genres)}) and a gate that decides, window by window, whose opinion counts.")
        with gr.Tab("Classify a song"):
            with gr.Row():
                with gr.Column(scale=1):
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                     label="Song (WAV, FLAC, OGG, MP3, M4A, ...)", elem_id="song")
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                    examples = example_files()
                    if examples:
                        gr.Examples(examples=[[e] for e in examples], inputs=[audio], label="Examples")
                        gr.Markdown("Examples: synthetic clips from `synth.py` (see `examples/CREDITS.md`); "
                                    "try your own recordings too.", elem_classes=["caption"])
                with gr.Column(scale=1):
                    status = gr.Markdown("Upload or record a song, or pick an example.", elem_id="status")
                    label = gr.Label(num_top_classes=len(genres) + 8, label="Genre", elem_id="genre-label")
                    gr.Markdown(READ_LABEL.format(seconds=model.config.clip_seconds), elem_classes=["caption"])
            timeline = gr.Plot(label="Genre across the song", elem_id="timeline", format="png")
            gr.Markdown(READ_TIMELINE, elem_classes=["caption"])
            gates = gr.Plot(label="Expert routing across the song", elem_id="gates", format="png")
            gr.Markdown(READ_GATES, elem_classes=["caption"])

            def run(audio_path, session):
                return classify(audio_path, session, model)

            outputs = [status, label, timeline, gates]
            button.click(run, [audio, session_model], outputs, api_name="classify")
            audio.change(run, [audio, session_model], outputs, api_name=False)
        with gr.Tab("Teach it a new genre"):
            if fewshot_ok:
                gr.Markdown("Give a few recordings of a genre the model was not trained on: it stores their "
                            "mean features as the genre's prototype (no training), and from then on songs are "
                            "also compared with it. Only your browser session sees the new genre.")
                new_name = gr.Textbox(label="Genre name", placeholder="e.g. reggae", elem_id="new-genre")
                new_files = gr.File(file_count="multiple", file_types=["audio"], elem_id="new-genre-files",
                                    label="Example recordings (3-5 is plenty)")
                teach = gr.Button("Learn this genre", elem_id="teach")
                teach_status = gr.Markdown(elem_id="teach-status")

                def learn(name, files, session):
                    return learn_genre(name, files, session, model)

                teach.click(learn, [new_name, new_files, session_model], [teach_status, session_model],
                            api_name="learn_genre")
            else:
                gr.Markdown(f"This model cannot learn new genres here: {why_not}", elem_id="teach-status")
    return demo


THEME_FONTS = dict(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                   font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])  # no web fonts: offline
CSS = ".caption { color: var(--body-text-color-subdued); font-size: 0.9em; margin-top: -0.5em; }"


def launch(demo, host="127.0.0.1", port=7860, **kwargs):
    """Start the server; returns what `Blocks.launch` returns (app, local URL, share URL)."""
    import gradio as gr

    return demo.launch(server_name=host, server_port=port, theme=gr.themes.Default(**THEME_FONTS), css=CSS,
                       max_file_size="200mb", footer_links=["api"], allowed_paths=[str(EXAMPLES_DIR)], **kwargs)


# -- a Space beside the model repo ----------------------------------------------------------------


def space_readme(model_repo, title="music-genre-moe demo"):
    """The Space's README.md: Gradio metadata, the model it demonstrates (`models:`, which app.py reads)."""
    return f"""---
title: {title}
emoji: 🎵
colorFrom: indigo
colorTo: pink
sdk: gradio
app_file: app.py
pinned: false
license: mit
models:
- {model_repo}
---

# {title}

Upload or record a song: [{model_repo}](https://huggingface.co/{model_repo}) names its genre, shows the genre
window by window across the song and which expert the gate trusted when, and can learn a new genre from a
few recordings. The model's weights and config come from its repo and load with the classes this Space carries: no downloaded code runs (set MUSIC_GENRE_MOE_TRUST_REMOTE_CODE=1 for a model of another type).
"""


def _module_files(name, found=None):
    """`name` and the project modules it imports at module level, recursively (what the Space must hold)."""
    import ast

    found = found if found is not None else []
    found.append(name)
    for node in ast.walk(ast.parse((HERE / name).read_text(encoding="utf-8"))):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] + [f"{node.module}.{a.name}" for a in node.names] \
            if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        for module in modules:  # `workbench.plots` is workbench/plots.py, with the package's __init__.py
            parts = module.split(".")
            for file in [("/".join(parts[:k]) + ".py") for k in range(1, len(parts) + 1)] + \
                        [("/".join(parts[:k]) + "/__init__.py") for k in range(1, len(parts) + 1)]:
                if (HERE / file).is_file() and file not in found:
                    _module_files(file, found)
    return found


def write_space(folder, model_repo):
    """A ready-to-push Space folder: app.py and the modules it imports (plots.py), requirements.txt,
    README.md, the examples. The model and its code come from `model_repo` when the Space starts."""
    if not runs.HUB_ID.match(model_repo):
        raise ValueError(f"--write-space needs --model to be a Hub repo id (owner/name), got {model_repo!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in _module_files("app.py"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HERE / name, out / name)
    reqs = [line for f in ("requirements.txt", "requirements-app.txt")
            for line in (HERE / f).read_text().splitlines() if line.strip() and not line.startswith(("#", "-r"))]
    cpu_torch = "--extra-index-url https://download.pytorch.org/whl/cpu"  # a CPU Space: not the CUDA wheel
    (out / "requirements.txt").write_text("\n".join([cpu_torch] + reqs) + "\n")
    (out / "README.md").write_text(space_readme(model_repo), encoding="utf-8")
    if EXAMPLES_DIR.is_dir():
        shutil.copytree(EXAMPLES_DIR, out / "examples", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help=f"run folder, save_pretrained/export folder, .pt or Hub repo id (default: ${ENV_VAR}, "
                        f"else {DEFAULT_MODEL})")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 to share on the network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--write-space", metavar="DIR", help="write a Hugging Face Space folder for --model and exit")
    p.add_argument("--trust-remote-code", action="store_true", default=os.environ.get(TRUST_ENV_VAR) == "1",
                   help=f"run a model's own Python code (a model of another type; default: ${TRUST_ENV_VAR}=1); "
                        "this project's models never need it")
    p.add_argument("--revision", help="Hub revision (commit, tag or branch) to pin the model to")
    args = p.parse_args(argv)
    source = args.model or default_model_source()
    if args.write_space:
        try:
            out = write_space(args.write_space, source)
        except ValueError as e:
            p.error(str(e))
        print(f"Space folder written to {out}; push it with:\n"
              f"  hf repos create <you>/<space-name> --type space --space-sdk gradio\n"
              f"  hf upload <you>/<space-name> {out} --repo-type space")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # failed uploads with their traceback, on the console only
    try:
        model = load_model(source, trust_remote_code=args.trust_remote_code, revision=args.revision)
    except Exception as e:  # noqa: BLE001: a one-line reason, not a traceback
        msg = readable_error(e)
        msg = msg[len(source) + 2:] if msg.startswith(source + ": ") else msg
        print(f"app.py: cannot load the model from {source}: {msg}", file=sys.stderr)
        return 2
    print(f"model: {source} ({', '.join(genres_of(model))})")
    launch(build_demo(model), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
