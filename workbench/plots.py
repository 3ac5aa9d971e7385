"""The run's figures, one function per PNG. Each takes plain arrays and a path, and closes its figure."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines or in CI
import matplotlib.pyplot as plt
import numpy as np

from modeling import LOSS_TERMS
from workbench.atomic_files import replacing

GENRE_COLOURS = plt.get_cmap("tab10")


def _save(fig, path):
    """Write the PNG atomically (a killed run never leaves half a figure under its name), close the figure."""
    try:
        fig.tight_layout()
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def genre_spectrograms(clips, sr, path):
    """Waveform (top) and log-mel spectrogram (bottom) of one clip per genre. clips: {genre: (samples,)}."""
    import librosa
    import librosa.display

    fig, axes = plt.subplots(2, len(clips), figsize=(3.6 * len(clips), 6), squeeze=False)
    for j, (genre, y) in enumerate(clips.items()):
        t = np.arange(len(y)) / sr
        axes[0, j].plot(t, y, lw=0.3, color=GENRE_COLOURS(j))
        axes[0, j].set(title=genre, xlabel="time (s)", ylim=(-1, 1))
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=96), ref=np.max)
        img = librosa.display.specshow(mel, sr=sr, x_axis="time", y_axis="mel", ax=axes[1, j], cmap="magma",
                                       vmin=-80, vmax=0)  # one scale for every genre, so colours compare
        axes[1, j].set(title=f"{genre}: log-mel")
        axes[1, j].xaxis.set_major_locator(plt.MaxNLocator(4))
        last = j == len(clips) - 1
        fig.colorbar(img, ax=axes[1, j], format="%+.0f dB", label="dB re. the clip's loudest bin" if last else None)
    axes[0, 0].set_ylabel("amplitude")
    return _save(fig, path)


def training_curves(history, best_epoch, path, ema_decay=0.0):
    """Loss terms and accuracy per epoch, train against validation; the kept epoch marked.

    Train figures are running means over the epoch of the weights being trained (dropout on);
    validation figures are of the weights kept: their moving average when `ema_decay` > 0, which
    lags the training weights early on.
    """
    ep = np.arange(1, len(history["train_loss"]) + 1)
    val = f"validation (weight average, decay {ema_decay:g})" if ema_decay else "validation"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(ep, history["train_loss"], label="train")
    axes[0].plot(ep, history["val_loss"], label=val)
    axes[0].set(title="total loss", xlabel="epoch")
    axes[1].plot(ep, history["train_acc"], label="train")
    axes[1].plot(ep, history["val_acc"], label=val)
    axes[1].set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for term in (t for t in LOSS_TERMS if t != "kan_reg_loss"):
        label = term.replace("_loss", "")
        if term == "entropy_loss":
            # A loss below zero looks like a bug: the legend says why it is negative by design.
            label = "entropy term = minus the gate's entropy:\nnegative by design; lower = a more spread gate"
        axes[2].plot(ep, history[f"val_{term}"], label=label)
    axes[2].axhline(0, color="grey", lw=0.6)
    axes[2].set(title="validation loss terms (unweighted)", xlabel="epoch")
    for ax in axes:
        ax.axvline(best_epoch, color="grey", ls=":", lw=1)
        ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_matrix(cm, genres, path, title="Test confusion matrix"):
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.0 * len(genres) + 2.5, 1.0 * len(genres) + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(genres)):
        for j in range(len(genres)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xticks=range(len(genres)), yticks=range(len(genres)), xticklabels=genres, yticklabels=genres,
           xlabel="predicted", ylabel="true", title=title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    return _save(fig, path)


def expert_gates(gate_mat, self_act, genres, path):
    """Heatmap of mean gate weight (genre x expert) and a bar chart of each genre's self-activation."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    im = axes[0].imshow(gate_mat, cmap="viridis", vmin=0, vmax=1)
    for i in range(len(genres)):
        for j in range(gate_mat.shape[1]):
            axes[0].text(j, i, f"{gate_mat[i, j]:.2f}", ha="center", va="center",
                         color="black" if gate_mat[i, j] > 0.5 else "white", fontsize=8)
    axes[0].set(xticks=range(gate_mat.shape[1]), yticks=range(len(genres)),
                xticklabels=[f"{g} expert" for g in genres], yticklabels=genres,
                xlabel="expert", ylabel="true genre of the test clips", title="Mean gate weight")
    plt.setp(axes[0].get_xticklabels(), rotation=45, ha="right")
    fig.colorbar(im, ax=axes[0])
    vals = [self_act[g] for g in genres]
    axes[1].bar(genres, vals, color=[GENRE_COLOURS(i) for i in range(len(genres))])
    axes[1].axhline(1 / len(genres), color="grey", ls="--", lw=1, label="uniform routing")
    for i, v in enumerate(vals):
        axes[1].text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=9 if len(genres) <= 5 else 8)
    # Headroom above the bars' labels for the legend, which would otherwise cover the first bars'.
    axes[1].set(ylim=(0, 1.25), title="Self-activation: own expert's weight on own genre")
    axes[1].set_yticks(np.linspace(0, 1, 6))  # a weight is at most 1: no tick in the headroom
    axes[1].legend(loc="upper right", fontsize=8)
    plt.setp(axes[1].get_xticklabels(), rotation=45, ha="right")  # ten genre names overlap level
    return _save(fig, path)


ROC_STYLES = ["-", "--", "-.", ":"]
ROC_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def roc_curves(labels, probs, genres, path):
    """One-vs-rest ROC per genre. Near-perfect curves all hug the top-left corner and hide each other,
    so each genre gets its own line style, marker and width (the first drawn widest), and its AUC
    in the legend."""
    from sklearn.metrics import auc, roc_curve

    fig, ax = plt.subplots(figsize=(6, 5.5))
    for i, g in enumerate(genres):
        is_g = np.asarray(labels) == i
        if 0 < is_g.sum() < len(is_g):
            fpr, tpr, _ = roc_curve(is_g, probs[:, i])
            ax.plot(fpr, tpr, color=GENRE_COLOURS(i % 10), ls=ROC_STYLES[i % len(ROC_STYLES)],
                    lw=max(1.0, 3.2 - 0.4 * i), marker=ROC_MARKERS[i % len(ROC_MARKERS)], markersize=5,
                    markevery=max(1, len(fpr) // 6), alpha=0.85, label=f"{g} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance (AUC 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="One-vs-rest ROC (test)",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


#: Polar plots per row in radar_charts.png.
RADAR_COLUMNS = 5


def radar_charts(gate_mat, genres, path):
    """Gate weights as routing profiles: one polar plot per genre, the mean gate weight its test clips
    give each expert (the rows of expert_gates.png's heat map, drawn so that the shapes compare)."""
    angles = np.linspace(0, 2 * np.pi, gate_mat.shape[1], endpoint=False).tolist()
    n_cols = min(len(genres), RADAR_COLUMNS)  # ten genres in one row were too small to read
    n_rows = -(-len(genres) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 4.0 * n_rows), subplot_kw={"polar": True},
                             squeeze=False)
    for ax in axes.flat[len(genres):]:
        ax.set_visible(False)
    for i, (g, ax) in enumerate(zip(genres, axes.flat)):
        vals = gate_mat[i].tolist()
        ax.plot(angles + angles[:1], vals + vals[:1], color=GENRE_COLOURS(i % 10))
        ax.fill(angles + angles[:1], vals + vals[:1], color=GENRE_COLOURS(i % 10), alpha=0.3)
        ax.set_xticks(angles)
        ax.set_xticklabels([f"{e} expert" for e in genres[:gate_mat.shape[1]]], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "0.5", "", "1"], fontsize=6)
        ax.set_title(f"{g} test clips", pad=16)
    fig.suptitle("Gate weights: mean weight each expert gets on each genre's test clips "
                 f"(a dedicated expert reaches 1; uniform routing is {1 / gate_mat.shape[1]:.2f})", fontsize=10)
    return _save(fig, path)


def feature_importance(importance, names, groups, path, top=20):
    """Top features and feature groups by mean |d logit(true genre) / d input| on the test split."""
    order = np.argsort(importance)[::-1][:top]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    axes[0].barh([names[i] for i in order][::-1], importance[order][::-1], color="tab:blue")
    axes[0].set(title=f"Top {top} features (input-gradient saliency)", xlabel="mean |gradient|")
    group_vals = {g: float(importance[idx].sum()) for g, idx in groups.items()}
    axes[1].bar(list(group_vals), list(group_vals.values()), color="tab:orange")
    axes[1].set(title="Importance by feature group (sum over the group)", ylabel="sum of mean |gradient|")
    plt.setp(axes[1].get_xticklabels(), rotation=45, ha="right")
    return _save(fig, path)


def reliability_diagram(centres, acc_before, counts, acc_after, temperature, path):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    w = 1 / len(centres)
    ax.bar(centres, acc_before, width=w, alpha=0.5, edgecolor="k", label="before scaling")
    ax.bar(centres, acc_after, width=w * 0.5, alpha=0.7, label=f"after (T = {temperature:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability (test)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return _save(fig, path)


def genre_timeline(windows, genres, path=None, title="Genre probabilities across the song"):
    """Stacked genre probabilities of every window of one song, along the song's time axis.

    Args:
        windows: `model.predict_audio(...)["windows"]`: dicts with `start`/`end` seconds and
            `probabilities` ({genre: probability}); skipped (silent) stretches stay blank.
        genres: the genre names to stack, in colour order (e.g. `model.config.genres`).
        path: also save the figure there as a PNG.

    Returns the matplotlib Figure (made outside pyplot, so it is freed when no longer referenced;
    `plt.close(fig)` is harmless).
    """
    if not windows:
        raise ValueError("genre_timeline: expected at least one window, got none")
    starts = np.array([float(w["start"]) for w in windows])
    widths = np.array([float(w["end"]) - float(w["start"]) for w in windows])
    probs = np.array([[float(w["probabilities"].get(g, 0.0)) for g in genres] for w in windows])
    fig = matplotlib.figure.Figure(figsize=(9, 3.2))  # outside pyplot: no global state, safe in a server thread
    ax = fig.subplots()
    bottom = np.zeros(len(windows))
    for i, genre in enumerate(genres):
        ax.bar(starts, probs[:, i], width=widths, bottom=bottom, align="edge", color=GENRE_COLOURS(i % 10),
               edgecolor="white", linewidth=0.5, label=genre)
        bottom += probs[:, i]
    end = float((starts + widths).max())
    ticks = np.unique(np.concatenate([starts, starts + widths]))  # window edges
    step = max(1, int(np.ceil(len(ticks) / 12)))  # at most about a dozen labels
    ax.set_xticks(ticks[::step], [f"{int(t // 60)}:{int(t % 60):02d}" for t in ticks[::step]])
    ax.set(xlim=(0, end), ylim=(0, 1), xlabel="time in the song (m:ss)", ylabel="probability", title=title)
    handles, labels = ax.get_legend_handles_labels()  # top to bottom, as stacked
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.17, right=0.83, bottom=0.17, top=0.9)  # fixed: lines up with app.py's gate plot
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
