"""The Hub model card (README.md) of one training run, built from its metrics.json.

Every figure on the card comes from the run: the `model-index` carries the run's test accuracy and
macro F1 (the seed's card showed "self-reported 0.000" because it wrote zeros there), and the prose
carries per-genre results, expert specialisation, expert usage and calibration. A run without
those metrics is refused (`MetricsError`), never filled with placeholders.
"""

import math

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from workbench.atomic_files import first_non_finite

TAGS = ["custom_code", "music", "audio", "genre-classification", "music-genre-classification",
        "mixture-of-experts", "moe", "pytorch"]


class MetricsError(ValueError):
    """metrics.json lacks a figure the card needs, or holds one that is not a real number."""


# -- checks ---------------------------------------------------------------------------------------


def _fraction(metrics, key):
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetricsError(f"metrics.json: expected {key!r} as a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise MetricsError(f"metrics.json: expected {key!r} in [0, 1], got {value}")
    return float(value)


def check_metrics(metrics):
    """Raise MetricsError unless `metrics` holds the figures the card publishes.

    Required: `test_accuracy`, `macro_f1` (numbers in [0, 1]) and `dataset` with `name` and `source`.
    """
    if not isinstance(metrics, dict):
        raise MetricsError(f"metrics.json: expected a JSON object, got {type(metrics).__name__}")
    bad = first_non_finite(metrics)
    if bad:  # older runs wrote NaN (not JSON, and not a figure to publish)
        raise MetricsError(f"metrics.json: {bad[0]} is {bad[1]}, not a number the card can publish")
    _fraction(metrics, "test_accuracy")
    _fraction(metrics, "macro_f1")
    ds = metrics.get("dataset")
    if not isinstance(ds, dict) or not ds.get("source") or not ds.get("name"):
        raise MetricsError(f"metrics.json: expected 'dataset' with 'name' and 'source', got {ds!r}")


def is_synthetic(metrics):
    return metrics["dataset"]["source"] == "synthetic"


# -- model-index ------------------------------------------------------------------------------------


def dataset_identity(metrics):
    """(dataset_type, dataset_name) for the model-index: what the run was really tested on."""
    ds = metrics["dataset"]
    if is_synthetic(metrics):
        return "synthetic", "Synthetic genre audio (synth.py generators, no real recordings)"
    return str(ds["name"]), f"{ds['name']} (local recordings, one folder per genre)"


def headline(metrics):
    """The card's headline accuracy: whole recordings (windows averaged) where the run has them.

    Returns a dict: accuracy, ci95 (list or None), n, correct (int or None), unit ("recordings" or
    "clips"). A synthetic clip is its own recording, so its clip accuracy is the track-level one.
    """
    t = metrics.get("track_level")
    if t:
        return {"accuracy": float(t["test_accuracy"]), "ci95": t.get("test_accuracy_ci95"), "n": t["n_tracks"],
                "correct": t.get("n_correct"), "unit": "recordings", "macro_f1": float(t["macro_f1"])}
    n = metrics.get("test_n") or (metrics["dataset"].get("n_tracks") or [None] * 3)[2]
    return {"accuracy": float(metrics["test_accuracy"]), "ci95": metrics.get("test_accuracy_ci95"), "n": n,
            "correct": metrics.get("test_correct"), "unit": "clips" if is_synthetic(metrics) else "windows",
            "macro_f1": float(metrics["macro_f1"])}


def _accuracy_text(h):
    counted = f"{h['correct']} of {h['n']} test {h['unit']}" if h["correct"] is not None else \
        f"{h['n']} test {h['unit']}"
    ci = f", 95% Wilson interval {_pct(h['ci95'][0])} to {_pct(h['ci95'][1])}" if h.get("ci95") else ""
    return f"{_pct(h['accuracy'])} ({counted}{ci})"


def eval_results(metrics):
    """The run's headline test accuracy and macro F1 as huggingface_hub `EvalResult`s."""
    dataset_type, dataset_name = dataset_identity(metrics)
    h = headline(metrics)
    common = dict(task_type="audio-classification", task_name="Music genre classification",
                  dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test")
    level = "whole recordings" if h["unit"] == "recordings" else h["unit"]
    return [
        EvalResult(metric_type="accuracy", metric_name=f"Test accuracy ({level}, n={h['n']})",
                   metric_value=h["accuracy"], **common),
        EvalResult(metric_type="f1", metric_name=f"Macro F1 ({level}, n={h['n']})", metric_config="macro",
                   metric_value=h["macro_f1"], **common),
    ]


def card_data(metrics, model_name):
    return ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="audio-classification",
        license="mit",
        tags=list(TAGS),
        eval_results=eval_results(metrics),
    )


# -- prose ----------------------------------------------------------------------------------------


def _pct(x):
    return f"{100 * x:.1f}%"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def is_gtzan(metrics):
    return "gtzan" in str(metrics["dataset"].get("name", "")).lower()


def uses_section(metrics, genres):
    research = " for research" if is_gtzan(metrics) else ""
    synthetic = ("\n*This run was trained on synthetic audio only: use it to try the code, the routing and the "
                 "loading, not to tag real music.*\n" if is_synthetic(metrics) else "")
    return f"""## Intended uses
{synthetic}
- Tagging music{research} with one of the genres it was trained on ({', '.join(genres)}), from audio files or
  waveforms of any length (5-second windows averaged) or from the 59 features.
- Looking at *why*: the gate weights say which genre experts a clip was routed to.
- A baseline and a teaching example for Mixture-of-Experts routing and Hub remote code.

## Out-of-scope uses

- Genres other than those above: every input is forced into one of them; there is no "none of these".
- Decisions about people or money (royalties, playlists that pay artists, content moderation):
  the error rates below are far too high and too uncertain.
- Speech, sound effects, or music mixed with speech or noise: nothing of the kind was in training.
""" + ("- Any commercial use: the training recordings (GTZAN) are licensed for research only.\n"
       if is_gtzan(metrics) else "")


def training_data_section(metrics):
    ds = metrics["dataset"]
    n_tracks, n_windows = ds.get("n_tracks"), ds.get("n_windows")
    size = ""
    if n_tracks:
        unit = "clips" if is_synthetic(metrics) else "recordings"
        size = (f" {sum(n_tracks)} {unit} of {len(ds.get('genres') or [])} genres, split train / validation / test "
                f"{' / '.join(map(str, n_tracks))} {unit}")
        if n_windows and not is_synthetic(metrics):
            size += f" ({' / '.join(map(str, n_windows))} windows)"
        size += "."
    if is_synthetic(metrics):
        name = "Synthetic audio from the project's five procedural generators (`synth.py`): no recordings."
        terms = "Generated here: no third-party terms apply."
    elif is_gtzan(metrics):
        name = f"`{ds['name']}`: recordings from GTZAN (Tzanetakis & Cook, 2002), one folder per genre."
        terms = ("GTZAN is distributed for research use only; its recordings stay under their owners' "
                 "copyright. These weights were fitted to it: use them for research only. GTZAN is ordered by "
                 "artist and holds near-duplicates, so even a split by recording can be optimistic.")
    else:
        name = f"`{ds['name']}`: local recordings, one folder per genre."
        terms = "The recordings' own licences apply; they are not part of this repo."
    return f"## Training data\n\n- {name}\n- Size:{size or ' not recorded.'}\n- Terms: {terms}\n"


def hyperparameters_section(metrics, config):
    a = metrics.get("train_args") or {}
    if not a:
        return ""
    rows = [("optimiser", f"AdamW, learning rate {a.get('lr')}, weight decay {a.get('weight_decay')}"),
            ("schedule", f"cosine annealing over {a.get('t_max')} epochs down to {a.get('eta_min')}"),
            ("epochs", f"at most {a.get('epochs')}, early stopping after {a.get('patience')} epochs without a lower "
                       f"validation loss; {metrics.get('epochs_run', '?')} run, epoch {metrics.get('best_epoch', '?')} kept"),
            ("batch size", a.get("batch_size")),
            ("gradient clipping", f"norm {a.get('grad_clip')}"),
            ("weight averaging", f"exponential moving average, decay {a.get('ema_decay')} per step"
                                 if a.get("ema_decay") else "none"),
            ("losses", f"cross-entropy (label smoothing {config.label_smoothing}) + {config.routing_weight} routing "
                       f"+ {config.load_balance_weight} load balance + {config.entropy_weight} gate entropy"),
            ("seed", a.get("seed"))]
    if a.get("quick"):
        rows.append(("mode", "`--quick`: a smoke-test run with little data and few epochs, not a result"))
    return "## Training procedure\n\n" + _table(["setting", "value"], rows) + "\n"


def results_section(metrics):
    ds = metrics["dataset"]
    h = headline(metrics)
    split = ds.get("split", "not recorded")
    out = [
        "## Evaluation",
        "",
        f"- Data: **{dataset_identity(metrics)[1]}**; split: {split}.",
        f"- **Test accuracy: {_accuracy_text(h)}**; macro F1 {h['macro_f1']:.3f}.",
    ]
    if h["unit"] == "recordings":
        out.append(f"- Per {_clip_word(metrics)} window (not independent: several come from one recording): "
                   f"accuracy {_pct(metrics['test_accuracy'])} over {metrics.get('test_n', '?')} windows.")
    if h.get("n"):
        out.append(f"- With {h['n']} test {h['unit']}, one {h['unit'][:-1]} moves accuracy by "
                   f"{100 / h['n']:.1f} points.")
    cv = metrics.get("cross_validation")
    if cv:
        ci = cv.get("ci95")
        ci_text = f", 95% interval {_pct(ci[0])} to {_pct(ci[1])}" if ci else ""
        out.append(f"- Cross-validated ({cv['folds']} folds by recording, {cv['n_tracks']} recordings): accuracy "
                   f"{_pct(cv['accuracy'])}{ci_text}.")
    per_genre = metrics.get("per_genre") or {}
    if per_genre:
        sa = metrics.get("self_activation", {})
        usage = metrics.get("expert_usage", {})
        rows = []
        for g, r in per_genre.items():
            rows.append([g, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                         _fmt(r.get("roc_auc")), _fmt(sa.get(g)), _fmt(usage.get(g)), r.get("support", "")])
        out += ["", f"Per genre on the test {h['unit'] if h['unit'] == 'clips' else 'windows'} (self-activation: "
                "mean gate weight of the genre's own expert on that genre's test inputs; usage: mean gate weight of "
                "that expert over all of them):", "",
                _table(["genre", "precision", "recall", "F1", "ROC AUC", "self-activation", "expert usage",
                        "support"], rows)]
    out += ["", *specialisation_lines(metrics), *calibration_lines(metrics)]
    return "\n".join(out)


def _clip_word(metrics):
    return "one per synthetic clip" if is_synthetic(metrics) else "clip-length"


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def specialisation_lines(metrics):
    lines = []
    if "mean_self_activation" in metrics:
        n = len(metrics.get("self_activation", {})) or None
        chance = f" (1/{n} = {1 / n:.2f} would be no specialisation)" if n else ""
        lines.append(f"- Mean self-activation: **{metrics['mean_self_activation']:.3f}**{chance}.")
    sp = metrics.get("specialisation")
    if sp:
        mx = sp.get("max_mutual_information_bits")
        mx_text = f" of a possible {mx:.2f}" if mx is not None else ""
        lines.append(f"- Ordering-free specialisation: best-matched purity {sp['best_match_purity']:.3f}, "
                     f"mutual information between genre and top expert {sp['mutual_information_bits']:.2f} bits"
                     f"{mx_text}.")
    return lines


def calibration_lines(metrics):
    c = metrics.get("calibration")
    if not c:
        return []
    if not c.get("temperature_fitted", True):
        return [f"- Calibration on the test split: NLL {c['nll']:.3f}, ECE {c['ece']:.3f}. No temperature was "
                f"fitted: the validation split had no misclassified input, so its NLL has no minimum."]
    return [f"- Calibration on the test split: NLL {c['nll']:.3f}, ECE {c['ece']:.3f}; after temperature "
            f"scaling (T = {c['temperature']:.2f}, fitted on validation): NLL {c['nll_scaled']:.3f}, "
            f"ECE {c['ece_scaled']:.3f}. The published model outputs the unscaled probabilities."]


def meaning_section(metrics):
    h = headline(metrics)
    if is_synthetic(metrics):
        body = (
            "These figures come from **synthetic audio**: five procedural generators (`synth.py`), one per "
            f"genre, which are easy to tell apart by construction (this run: {_pct(h['accuracy'])}). They "
            "show that audio loading, the 59 features, normalisation, the experts, the gate and the export "
            "work end to end. They say **nothing** about how well the model recognises genres in real music: "
            "real recordings are far more varied than five signal generators, and a model trained only on "
            "synthetic clips should be expected to do poorly on them. Train on real recordings "
            "(`python train.py --data-dir DIR` in the project source) before relying on the predictions.")
        if (metrics.get("train_args") or {}).get("quick"):
            body += (" This run is a quick run (`train.py --quick`: few clips, few epochs), made for smoke "
                     "tests; its figures are not a result.")
    else:
        by_artist = "artist" in str(metrics["dataset"].get("split", ""))
        unit = ("by artist, so that the test recordings are by artists the training never heard"
                if by_artist else "by recording so that no window of a test recording was seen in training "
                "(artists may sit on both sides: optimistic)")
        body = (
            f"These figures come from real recordings in `{metrics['dataset']['name']}`, split {unit}. "
            f"{h['n']} test {h['unit']} give the "
            "interval above; recordings from other sources, genres outside the trained ones and mixed-genre "
            "tracks will do worse.")
    return "## What these numbers mean\n\n" + body


def usage_section(repo_id, genres, num_features):
    example = ", ".join(f'"{g}": ...' for g in genres[:2])
    return f"""## How to use

Needs `torch` and `transformers` (and `safetensors`); `librosa` and `soundfile` only for audio input.
`trust_remote_code=True` runs this repo's Python files on your machine: read them, and pin the
commit you read with `revision=` (a commit hash from the repo's history), so that a later push
cannot change the code you run.

```python
from transformers import AutoModel

REVISION = "..."  # the commit hash you reviewed (Files and versions -> History)
model = AutoModel.from_pretrained("{repo_id}", revision=REVISION, trust_remote_code=True)
```

### Predict from feature vectors

The input is the raw {num_features}-dim vector of `features.extract_features` (seed order: MFCC means,
MFCC stds, chroma, centroid, bandwidth, rolloff, ZCR, RMS, tempo, harmonic ratio), one `({num_features},)`
vector or a `(batch, {num_features})` array, tensor or list. The model z-scores it with the training
statistics stored in `config.json`.

```python
result = model.predict(features)
# {{"predicted_genre": "{genres[0]}", "confidence": 0.93,
#  "probabilities": {{{example}}}, "gate_weights": {{{example}}}}}
```

A batch gives a list of such dicts. A wrong width, NaN or infinity raises a `ValueError` naming the
expected and the received value.

### Predict from audio

```python
song = model.predict_audio("song.mp3")                         # any length; WAV, FLAC, OGG, MP3
song = model.predict_audio(waveform, sampling_rate=44100)      # a mono array at any rate
song["predicted_genre"], song["num_windows"], song["windows"][0]  # per-window detail
```

The audio is resampled to 22,050 Hz, cut into clip-length windows, and the window probabilities
and gate weights averaged.

### Pipeline

```python
from transformers import pipeline

classify = pipeline(model="{repo_id}", revision=REVISION, trust_remote_code=True)  # task from config.json
classify("song.mp3")                                          # [{{"label": "{genres[0]}", "score": 0.93}}, ...]
classify({{"raw": waveform, "sampling_rate": 44100}})           # or {{"array": ..., "sampling_rate": ...}}
```

The repo ships its own pipeline (`pipeline.py`, registered in `config.json` under
`custom_pipelines`) and feature extractor (`preprocessor_config.json`), which read audio with
soundfile/librosa: neither ffmpeg nor torchaudio is needed. `task="audio-classification"` selects the
same pipeline.
"""


def architecture_section(config, n_parameters):
    c = config
    genres = ", ".join(c.genres)
    experts = "Kolmogorov-Arnold (KAN) layers" if c.expert_type == "kan" else "MLP layers"
    top_k = ("dense: every expert runs" if c.num_experts_per_tok is None
             else f"sparse: the top {c.num_experts_per_tok} weights kept")
    frontend = "" if c.frontend == "none" else (
        f"\n\nEach window's input also holds the {c.frontend_size}-d embedding of the pretrained **musicnn** "
        "MSD model (Pons & Serra, 2019; the mean of its penultimate layer over the window's 3-s 16-kHz "
        "log-mel patches), computed by the front end inside this model "
        f"({'frozen' if c.freeze_frontend else 'fine-tuned'}; its weights are in `model.safetensors`). At inference it "
        f"runs in the arithmetic `config.frontend_precision` names, `{c.frontend_precision}`"
        + (" (int8 on CPUs with AVX-512 VNNI and BF16, bf16 with BF16 only, else fp32)" if c.frontend_precision == "auto" else "")
        + "; `fp32` is the exact path. Weights "
        "converted from the `musicnn==0.1.0` checkpoint: Copyright (c) Music Technology Group, Universitat "
        "Pompeu Fabra 2019, ISC licence (`LICENSE-musicnn`).")
    return f"""## Model

A Mixture of Experts over a {c.input_size}-dim audio input per window: shared encoder
({c.input_size} -> {c.hidden_size}), {c.num_labels} genre experts ({experts}, {c.num_expert_blocks} residual blocks of
width {c.expert_hidden_size}, output {c.expert_output_size}), a gating network with softmax weights
({top_k}) and a classifier head on the weighted sum of expert outputs. Expert *i* is trained to be
genre *i*'s expert by a routing loss (weight {c.routing_weight}) besides cross-entropy (label
smoothing {c.label_smoothing}), the Switch load-balance term ({c.load_balance_weight}) and the gate
entropy term ({c.entropy_weight}). {n_parameters:,} parameters.{frontend}

Genres: {genres}. Features are computed at {c.sampling_rate} Hz on {c.clip_seconds:g}-second windows and
z-scored inside the model with the training split's mean and standard deviation, stored in `config.json`.
"""


def limits_section(metrics):
    h = headline(metrics)
    lines = [
        "## Limitations",
        "",
        "- It only knows the genres above; anything else is forced into one of them.",
        "- The features are clip-level summaries (means and standard deviations over time): rhythm "
        "evolution, song structure, lyrics and production era are invisible to it.",
        f"- The test set is small ({h['n']} {h['unit']}): the accuracy interval above is wide, and the per-genre "
        "figures rest on a handful of inputs each.",
        "- The probabilities are the model's raw softmax; see the calibration line above before reading them "
        "as confidences.",
        "- Tempo and chroma estimates become unreliable on very short clips (under a few seconds).",
    ]
    if is_synthetic(metrics):
        lines.append("- Trained on synthetic audio only: see *What these numbers mean*.")
    if is_gtzan(metrics):
        lines.append("- GTZAN is small, ordered by artist and known to hold repeated and mislabelled excerpts; "
                     "results on it overstate accuracy on other music.")
    return "\n".join(lines) + "\n"


def files_section(files):
    notes = {
        "config.json": "architecture, genres, normalisation stats, `auto_map`, `custom_pipelines`",
        "model.safetensors": "trained weights",
        "pytorch_model.bin": "trained weights",
        "preprocessor_config.json": "the feature extractor (`AutoFeatureExtractor`)",
        "configuration.py": "`MusicGenreMoEConfig`",
        "modeling.py": "`MusicGenreMoE`: experts, gate, losses, `predict`, `predict_audio`",
        "kan.py": "Kolmogorov-Arnold layer (used when `expert_type=\"kan\"`)",
        "features.py": "audio loading and the 59 features",
        "decoding.py": "audio files to mono samples: soundfile, and PyAV for M4A/AAC/ALAC, WMA and video sound "
                       "when `av` is installed",
        "frontend.py": "the musicnn front end in PyTorch and its log-mel input",
        "prototypes.py": "prototype maths of few-shot genres (`add_genre`)",
        "LICENSE-musicnn": "ISC licence of the musicnn weights",
        "pipeline.py": "feature extractor and audio-classification pipeline",
        "walkthrough.ipynb": "the whole story as a notebook (rendered here, with an Open in Colab button)",
        "metrics.json": "every figure of this run",
    }
    rows = [f"- `{f}`: {notes[f]}" if f in notes else f"- `{f}`" for f in files]
    return "## Files\n\n" + "\n".join(rows) + "\n"


# Every figure train.py writes, with what it shows; the card lists those the export holds.
FIGURE_CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix of the test split",
    "expert_gates.png": "Mean gate weight per genre and expert, and each genre's self-activation",
    "radar_charts.png": "Gate weights per genre as routing profiles (the rows of the gate heat map, one polar plot "
                        "per genre)",
    "roc_curves.png": "One-vs-rest ROC curves of the test split, AUC per genre",
    "calibration.png": "Reliability diagram of the test split",
    "training_curves.png": "Loss terms and accuracy per epoch, the kept epoch marked",
    "feature_importance.png": "Input-gradient importance per feature and feature group",
    "genre_spectrograms.png": "Waveform and log-mel spectrogram (dB) of one training clip per genre",
}


def figures_section(figures):
    lines = [f"![{FIGURE_CAPTIONS.get(name, name)}](figures/{name})\n\n*{FIGURE_CAPTIONS.get(name, name)}.*"
             for name in figures]
    return ("## Figures\n\n" + "\n\n".join(lines) + "\n") if lines else ""


def _inputs_text(config):
    if config.frontend == "none":
        return "the 59 audio features"
    return f"the 59 audio features and the {config.frontend} front end's {config.frontend_size}-d embedding"


def _decision_text(config):
    decision = getattr(config, "decision", "classifier")
    if decision == "centroids":
        return ("; a song's genre is its nearest artist-weighted genre centroid (cosine), which also says when "
                "a song is unlike every trained genre (`known`, `novelty`)")
    if decision == "blend":
        return "; a song's genre is the mean of the head's and the genre centroids' probabilities"
    return ""


def build_model_card(metrics, config, *, repo_id, n_parameters, files, figures=(), has_notebook=False):
    """The model card of one run.

    Args:
        metrics (`dict`): the run's metrics.json (checked with `check_metrics`).
        config: the exported `MusicGenreMoEConfig`.
        repo_id (`str`): used in the code examples (e.g. "user/music-genre-moe").
        n_parameters (`int`): parameter count of the exported model.
        files (`list[str]`): every file of the export besides README.md.
        figures (`list[str]`): PNG names copied under `figures/` (only these are shown).
        has_notebook (`bool`): whether `walkthrough.ipynb` is part of the export.

    Returns:
        `huggingface_hub.ModelCard`
    """
    check_metrics(metrics)
    name = repo_id.split("/")[-1]
    data = card_data(metrics, name)
    notebook = ("\nThe notebook `walkthrough.ipynb` in this repo walks through data, training, evaluation and "
                "prediction top to bottom; it renders on this page and opens in Colab.\n" if has_notebook else "")
    h = headline(metrics)
    data_word = "synthetic audio" if is_synthetic(metrics) else f"recordings in `{metrics['dataset']['name']}`"
    body = "\n".join([
        f"# {name}",
        "",
        f"A Mixture-of-Experts music genre classifier ({', '.join(config.genres)}) on a {config.input_size}-dim "
        f"input per window ({_inputs_text(config)}), with one expert per genre and a gate whose weights show "
        f"which experts a clip was routed to{_decision_text(config)}. This run, on {data_word}: test accuracy "
        f"{_accuracy_text(h)}.",
        notebook,
        uses_section(metrics, config.genres),
        training_data_section(metrics),
        hyperparameters_section(metrics, config),
        results_section(metrics),
        "",
        meaning_section(metrics),
        "",
        limits_section(metrics),
        usage_section(repo_id, config.genres, config.num_features),
        architecture_section(config, n_parameters),
        figures_section(figures),
        files_section(files),
        "## License\n\nMIT (code and weights)" + ("; the training data's research-only terms above still "
                                                   "apply to what the weights learned.\n" if is_gtzan(metrics) else ".\n"),
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
