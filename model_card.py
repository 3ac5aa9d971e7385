"""The Hub model card (README.md) of one training run, built from its metrics.json.

Every figure on the card comes from the run: the `model-index` carries the run's test accuracy and
macro F1 (the seed's card showed "self-reported 0.000" because it wrote zeros there), and the prose
carries per-genre results, expert specialisation, expert usage and calibration. A run without
those metrics is refused (`MetricsError`), never filled with placeholders.
"""

import math

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from atomic_files import first_non_finite

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


def eval_results(metrics):
    """The run's test accuracy and macro F1 as huggingface_hub `EvalResult`s."""
    dataset_type, dataset_name = dataset_identity(metrics)
    common = dict(task_type="audio-classification", task_name="Music genre classification",
                  dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test")
    return [
        EvalResult(metric_type="accuracy", metric_name="Test accuracy",
                   metric_value=float(metrics["test_accuracy"]), **common),
        EvalResult(metric_type="f1", metric_name="Macro F1", metric_config="macro",
                   metric_value=float(metrics["macro_f1"]), **common),
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


def results_section(metrics):
    ds = metrics["dataset"]
    acc, f1 = metrics["test_accuracy"], metrics["macro_f1"]
    ci = metrics.get("test_accuracy_ci95")
    ci_text = f" (95% Wilson interval {_pct(ci[0])} to {_pct(ci[1])})" if ci else ""
    n_windows = ds.get("n_windows")
    split = ds.get("split", "not recorded")
    out = [
        "## Results of this run",
        "",
        f"- Data: **{dataset_identity(metrics)[1]}**; split: {split}.",
    ]
    if n_windows:
        out.append(f"- Windows ({_clip_word(metrics)}) train / validation / test: "
                   f"{' / '.join(str(n) for n in n_windows)}.")
    out += [
        f"- Test accuracy: **{_pct(acc)}**{ci_text}; macro F1: **{f1:.3f}**.",
    ]
    if "track_level" in metrics:
        t = metrics["track_level"]
        out.append(f"- Whole recordings ({t['n_tracks']} test recordings, windows averaged): accuracy "
                   f"{_pct(t['test_accuracy'])} (95% interval {_pct(t['test_accuracy_ci95'][0])} to "
                   f"{_pct(t['test_accuracy_ci95'][1])}), macro F1 {t['macro_f1']:.3f}.")
    per_genre = metrics.get("per_genre") or {}
    if per_genre:
        sa = metrics.get("self_activation", {})
        usage = metrics.get("expert_usage", {})
        rows = []
        for g, r in per_genre.items():
            rows.append([g, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                         _fmt(r.get("roc_auc")), _fmt(sa.get(g)), _fmt(usage.get(g)), r.get("support", "")])
        out += ["", "Per genre on the test split (self-activation: mean gate weight of the genre's own expert "
                "on that genre's clips; usage: mean gate weight of that expert over all test clips):", "",
                _table(["genre", "precision", "recall", "F1", "ROC AUC", "self-activation", "expert usage",
                        "support"], rows)]
    out += ["", *specialisation_lines(metrics), *calibration_lines(metrics)]
    return "\n".join(out)


def _clip_word(metrics):
    return "one per synthetic clip" if is_synthetic(metrics) else "clip-length cuts of the recordings"


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
                f"fitted: the validation split had no misclassified clip, so its NLL has no minimum."]
    return [f"- Calibration on the test split: NLL {c['nll']:.3f}, ECE {c['ece']:.3f}; after temperature "
            f"scaling (T = {c['temperature']:.2f}, fitted on validation): NLL {c['nll_scaled']:.3f}, "
            f"ECE {c['ece_scaled']:.3f}. The published model outputs the unscaled probabilities."]


def meaning_section(metrics):
    if is_synthetic(metrics):
        body = (
            "These figures come from **synthetic audio**: five procedural generators (`synth.py`), one per "
            "genre. High accuracy there is expected by construction (a full run reaches close to 100%); it "
            "shows that audio loading, the 59 features, normalisation, the experts, the gate and the export "
            "all work end to end. It "
            "says **nothing** about how well the model recognises genres in real music: real recordings "
            "are far more varied than five signal generators, and a model trained only on synthetic clips "
            "should be expected to do poorly on them. Train on real recordings (`python train.py --data-dir DIR` "
            "in the project source) before relying on the predictions.")
        if (metrics.get("train_args") or {}).get("quick"):
            body += (" This run is a quick run (`train.py --quick`: few clips, few epochs), made for smoke "
                     "tests; its figures are lower than a full run's and are not a result.")
    else:
        body = (
            f"These figures come from real recordings in `{metrics['dataset']['name']}`, split by recording "
            "so that no cut of a test recording was seen in training. Small test sets give wide "
            "intervals (shown above): one clip out of 25 moves accuracy by 4 points. Recordings from other "
            "sources, genres outside the trained ones, and mixed-genre tracks will do worse.")
    return "## What these numbers mean\n\n" + body


def usage_section(repo_id, genres, num_features):
    example = ", ".join(f'"{g}": ...' for g in genres[:2])
    return f"""## How to use

Needs `torch` and `transformers` (and `safetensors`); `librosa` and `soundfile` only for audio input.

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
```

### Predict from feature vectors

The input is the {num_features}-dim vector of `features.extract_features` (seed order: MFCC means,
MFCC stds, chroma, centroid, bandwidth, rolloff, ZCR, RMS, tempo, harmonic ratio), one `({num_features},)`
vector or a `(batch, {num_features})` array, tensor or list.

```python
result = model.predict(raw_features, already_normalised=False)  # z-scored with the stats in config.json
result = model.predict(zscored_features)                         # already normalised (the default)
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

classify = pipeline(model="{repo_id}", trust_remote_code=True)   # task read from config.json
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
    return f"""## Model

A Mixture of Experts over a {c.num_features}-dim audio feature vector: shared encoder
({c.num_features} -> {c.hidden_size}), {c.num_labels} genre experts ({experts}, {c.num_expert_blocks} residual blocks of
width {c.expert_hidden_size}, output {c.expert_output_size}), a gating network with softmax weights
({top_k}) and a classifier head on the weighted sum of expert outputs. Expert *i* is trained to be
genre *i*'s expert by a routing loss (weight {c.routing_weight}) besides cross-entropy (label
smoothing {c.label_smoothing}), the Switch load-balance term ({c.load_balance_weight}) and the gate
entropy term ({c.entropy_weight}). {n_parameters:,} parameters.

Genres: {genres}. Features are computed at {c.sampling_rate} Hz on {c.clip_seconds:g}-second windows and
z-scored with the training split's mean and standard deviation, stored in `config.json`.
"""


def limits_section(metrics):
    return """## Limits

- It only knows the genres above; anything else is forced into one of them.
- The features are clip-level summaries (means and standard deviations over time): rhythm
  evolution and song structure are invisible to it.
- Probabilities are not calibrated beyond what the calibration figures above show.
- Tempo and chroma estimates become unreliable on very short clips (under a few seconds).
""" + ("- Trained on synthetic audio only: see *What these numbers mean*.\n" if is_synthetic(metrics) else "")


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
        "pipeline.py": "feature extractor and audio-classification pipeline",
        "walkthrough.ipynb": "the whole story as a notebook (rendered here, with an Open in Colab button)",
        "metrics.json": "every figure of this run",
    }
    rows = [f"- `{f}`: {notes[f]}" if f in notes else f"- `{f}`" for f in files]
    return "## Files\n\n" + "\n".join(rows) + "\n"


def figures_section(figures):
    wanted = [("confusion_matrix.png", "Confusion matrix (test split)"),
              ("expert_gates.png", "Gate weights per genre and self-activation"),
              ("calibration.png", "Reliability diagram")]
    lines = [f"![{title}](figures/{name})" for name, title in wanted if name in figures]
    return ("## Figures\n\n" + "\n\n".join(lines) + "\n") if lines else ""


def build_model_card(metrics, config, *, repo_id, n_parameters, files, figures=(), has_notebook=False):
    """The model card of one run.

    Args:
        metrics (`dict`): the run's metrics.json (checked with `check_metrics`).
        config: the exported `MusicGenreMoEConfig`.
        repo_id (`str`): used in the code examples (e.g. "user/music-genre-moe").
        n_parameters (`int`): parameter count of the exported model.
        files (`list[str]`): every file of the export besides README.md.
        figures (`list[str]`): PNG names copied under `figures/`.
        has_notebook (`bool`): whether `walkthrough.ipynb` is part of the export.

    Returns:
        `huggingface_hub.ModelCard`
    """
    check_metrics(metrics)
    name = repo_id.split("/")[-1]
    data = card_data(metrics, name)
    notebook = ("\nThe notebook `walkthrough.ipynb` in this repo walks through data, training, evaluation and "
                "prediction top to bottom; it renders on this page and opens in Colab.\n" if has_notebook else "")
    acc = _pct(metrics["test_accuracy"])
    data_word = "synthetic audio" if is_synthetic(metrics) else f"recordings in `{metrics['dataset']['name']}`"
    body = "\n".join([
        f"# {name}",
        "",
        f"A Mixture-of-Experts music genre classifier ({', '.join(config.genres)}) on a 59-dim audio "
        f"feature vector, with one expert per genre and a gate whose weights show which experts a clip "
        f"was routed to. This run: test accuracy {acc}, macro F1 {metrics['macro_f1']:.3f} on {data_word}.",
        notebook,
        results_section(metrics),
        "",
        meaning_section(metrics),
        "",
        usage_section(repo_id, config.genres, config.num_features),
        architecture_section(config, n_parameters),
        limits_section(metrics),
        figures_section(figures),
        files_section(files),
        "## License\n\nMIT.\n",
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
