"""Metrics for a genre classifier with a gate: classification, routing specialisation, calibration.

Plain numpy/scipy/scikit-learn on arrays, so train.py and the benchmarks compute every figure the
same way. Shapes: `labels` (n,), `probs`/`gates` (n, num_genres), `logits` (n, num_genres).
"""

import math

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize_scalar
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score


# -- classification ---------------------------------------------------------------------------------


def wilson_interval(correct, total, z=1.96):
    """95% Wilson score interval for a proportion (honest at small n, unlike the normal one)."""
    if total == 0:
        return (float("nan"), float("nan"))
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def classification_metrics(labels, probs, genres):
    """Accuracy (with 95% CI), macro F1, per-genre precision/recall/F1/support/ROC AUC, confusion matrix."""
    labels = np.asarray(labels)
    pred = probs.argmax(1)
    k = len(genres)
    correct = int((pred == labels).sum())
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=range(k), zero_division=0)
    per_genre = {}
    for i, g in enumerate(genres):
        is_g = labels == i
        auc = roc_auc_score(is_g, probs[:, i]) if 0 < is_g.sum() < len(labels) else float("nan")
        per_genre[g] = {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                        "support": int(s[i]), "roc_auc": float(auc)}
    return {
        "accuracy": correct / len(labels),
        "accuracy_ci95": list(wilson_interval(correct, len(labels))),
        "macro_f1": float(f1_score(labels, pred, labels=range(k), average="macro", zero_division=0)),
        "per_genre": per_genre,
        "confusion_matrix": confusion_matrix(labels, pred, labels=range(k)).tolist(),
    }


# -- routing ----------------------------------------------------------------------------------------


def gate_matrix(labels, gates, num_genres):
    """(num_genres, num_experts): mean gate weights of each genre's clips."""
    labels = np.asarray(labels)
    return np.stack([gates[labels == i].mean(0) if (labels == i).any() else np.full(gates.shape[1], np.nan)
                     for i in range(num_genres)])


def self_activation(labels, gates, genres):
    """genre -> mean weight of that genre's own expert on that genre's clips."""
    m = gate_matrix(labels, gates, len(genres))
    return {g: float(m[i, i]) for i, g in enumerate(genres)}


def expert_usage(gates, genres):
    """expert -> mean gate weight over all clips (sums to 1)."""
    return dict(zip(genres, gates.mean(0).astype(float).tolist()))


def specialisation(labels, gates):
    """Ordering-free specialisation: does each genre have an expert of its own, whichever it is?

    best_match_purity: fraction of clips whose top expert is their genre's best-matched expert
    (one-to-one matching of genres to experts by the Hungarian algorithm on the contingency table).
    mutual_information_bits: I(genre; top expert); log2(num_genres) is perfect, 0 is no relation.
    """
    labels = np.asarray(labels)
    top = gates.argmax(1)
    n_g, n_e = labels.max() + 1, gates.shape[1]
    table = np.zeros((max(n_g, n_e), max(n_g, n_e)))
    np.add.at(table, (labels, top), 1)
    rows, cols = linear_sum_assignment(-table)
    joint = table / table.sum()
    pg, pe = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float((joint[nz] * np.log2(joint[nz] / (pg @ pe)[nz])).sum())
    return {
        "best_match_purity": float(table[rows, cols].sum() / table.sum()),
        "mutual_information_bits": mi,
        "max_mutual_information_bits": float(math.log2(n_g)),
    }


# -- calibration ------------------------------------------------------------------------------------


def softmax(logits, temperature=1.0):
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(labels, probs):
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def expected_calibration_error(labels, probs, bins=15):
    """ECE with equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / n."""
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += abs(correct[sel].mean() - conf[sel].mean()) * sel.mean()
    return float(ece)


def has_errors(labels, logits):
    """Whether any row's argmax differs from its label (else NLL has no minimum in T)."""
    return bool(np.any(np.asarray(logits).argmax(1) != np.asarray(labels)))


def fit_temperature(labels, logits):
    """Temperature T > 0 minimising validation NLL of softmax(logits / T).

    When every validation row is classified correctly the NLL falls without limit as T -> 0 (there
    is no minimum to fit), so T = 1 (no scaling) is returned rather than the search bound, which
    would make the test probabilities absurdly sharp.
    """
    if not has_errors(labels, logits):
        return 1.0
    res = minimize_scalar(lambda log_t: nll(labels, softmax(logits, math.exp(log_t))),
                          bounds=(-3, 3), method="bounded")
    return float(math.exp(res.x))


def calibration(val_labels, val_logits, test_labels, test_logits):
    """Test NLL and ECE before and after temperature scaling fitted on the validation split.

    `temperature_fitted` is False when the validation split had no error to fit T on (T = 1).
    """
    t = fit_temperature(val_labels, val_logits)
    raw, scaled = softmax(test_logits), softmax(test_logits, t)
    return {"temperature": t, "temperature_fitted": has_errors(val_labels, val_logits),
            "nll": nll(test_labels, raw), "ece": expected_calibration_error(test_labels, raw),
            "nll_scaled": nll(test_labels, scaled), "ece_scaled": expected_calibration_error(test_labels, scaled)}


def reliability_curve(labels, probs, bins=10):
    """(bin centres, accuracy per bin, count per bin) for a reliability diagram."""
    conf, correct = probs.max(1), probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    acc = np.bincount(idx, weights=correct, minlength=bins) / np.maximum(counts, 1)
    return (edges[:-1] + edges[1:]) / 2, acc, counts


# -- grouping windows into tracks -------------------------------------------------------------------


def track_average(track_ids, *arrays):
    """Average rows of each array per track: returns (unique track ids, averaged arrays...)."""
    track_ids = np.asarray(track_ids)
    uniq, inv = np.unique(track_ids, return_inverse=True)
    counts = np.bincount(inv)
    out = []
    for a in arrays:
        sums = np.zeros((len(uniq),) + a.shape[1:])
        np.add.at(sums, inv, a)
        out.append(sums / counts.reshape((-1,) + (1,) * (a.ndim - 1)))
    return (uniq, *out)
