"""Few-shot genres: N-way K-shot episodes, Prototypical-Networks loss, and episode evaluation.

Used by `benchmarks/fewshot_eval.py` (evaluation on genres the model never saw) and by
`train.py --episodic` (the prototypical loss added to the training loss).

Definitions
-----------
example
    One `clip_seconds` (5 s) window's 59-dim feature vector; a 30-s GTZAN clip gives 6.
recording (track)
    The file a window came from. Windows of one recording are near-duplicates, so support and
    query never share a recording.
shot (``shot_unit="window"``, the default)
    One window. In each episode every class gets one *query recording*; its K support windows are
    drawn from the class's *other* recordings, round-robin over them so that K windows come from
    min(K, n_other_recordings) different recordings (with 5 recordings per genre, 5-shot uses 4
    recordings, one of them twice). With 5 recordings per genre a shot cannot be a whole recording
    at K = 5 and still leave a recording for the queries; that is why a shot is a window.
shot (``shot_unit="recording"``)
    One recording: all its windows enter the prototype (K <= n_recordings - 1).
query
    ``n_query`` windows of the class's query recording, each classified on its own.

Learned feature weights
-----------------------
`feature_weights` learns a per-feature weight from the *training* genres, the ratio of each
z-scored feature's between-genre variance to its within-genre (window) variance; the embedding
``weighted_features(z, w) = z * w`` keeps every feature (no collapse onto the training genres'
directions) but stretches the ones that separated genres in training and shrinks the ones that
vary mostly inside a genre. It is a learned diagonal metric with a closed-form fit, chosen over
gradient-trained diagonal, linear and residual projections (prototypical or supervised-contrastive
loss) in the development direction of `benchmarks/fewshot_eval.py` (``--swap``), where every
gradient-trained variant overfitted the five training genres. Measured on gtzan-mini-dev (5-way,
1,000 episodes): development direction 5-shot 0.716 against raw prototypes' 0.627; held-out
direction (weights from the five seed genres, episodes on the other five) 0.745 against 0.783,
so it does *not* generalise there (the seed genres' between-genre variance is dominated by
classical; a genre-level cross-validation inside either direction's training genres also shows
no gain). Kept as a measured candidate, not as the model's default few-shot space.

Prototypes are class means of embeddings; a query goes to the nearest prototype by squared
Euclidean distance or by cosine similarity (``metric="cosine"``: embeddings L2-normalised first,
prototype = mean of the normalised support embeddings), the maths of `prototypes.py`, which
`MusicGenreMoE.add_genre`/`predict` use with `config.prototype_metric`.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prototypes import COSINE_SCALE, PROTOTYPE_METRICS, class_prototypes, metric_space, prototype_scores  # shared with the model

METRICS = PROTOTYPE_METRICS
SHOT_UNITS = ("window", "recording")


# -- episodes ---------------------------------------------------------------------------------------


@dataclass
class Episode:
    """Row indices of one N-way K-shot episode (into the arrays it was sampled from).

    Attributes
    ----------
    classes : (n_way,) int, the dataset labels of the episode's classes (episode label i = classes[i])
    support, support_labels : (n_support,) int rows and their episode labels in [0, n_way)
    query, query_labels : (n_query_total,) int rows and their episode labels
    query_tracks : (n_way,) int, the query recording of each class
    """

    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    query_tracks: np.ndarray


def sample_episode(rng, labels, tracks, n_way, k_shot, n_query, classes=None, shot_unit="window"):
    """Sample one N-way K-shot episode whose support and query come from different recordings.

    Parameters
    ----------
    rng : np.random.Generator
    labels, tracks : (n_rows,) int arrays, the class and the recording of every row (window)
    n_way, k_shot, n_query : int
        Classes per episode, shots per class (see the module docstring for what a shot is),
        query windows per class (fewer when the query recording has fewer windows).
    classes : sequence of int, optional
        Pick the n_way classes from these (default: every label present).
    shot_unit : {"window", "recording"}

    Returns
    -------
    Episode
    """
    labels, tracks = np.asarray(labels), np.asarray(tracks)
    if shot_unit not in SHOT_UNITS:
        raise ValueError(f"shot_unit must be one of {SHOT_UNITS}, got {shot_unit!r}")
    if k_shot < 1 or n_query < 1:
        raise ValueError(f"k_shot and n_query must be >= 1, got k_shot={k_shot}, n_query={n_query}")
    pool = np.unique(labels) if classes is None else np.asarray(classes)
    if n_way > len(pool):
        raise ValueError(f"n_way={n_way} needs that many classes, got {len(pool)}")
    chosen = rng.choice(pool, n_way, replace=False)
    support, support_y, query, query_y, query_tracks = [], [], [], [], []
    for i, c in enumerate(chosen):
        class_tracks = np.unique(tracks[labels == c])
        if len(class_tracks) < 2:
            raise ValueError(f"class {c}: needs >= 2 recordings (support and query apart), got {len(class_tracks)}")
        q_track = rng.choice(class_tracks)
        others = rng.permutation(class_tracks[class_tracks != q_track])
        rows = _support_rows(rng, tracks, others, k_shot, shot_unit, c)
        support += rows
        support_y += [i] * len(rows)
        q_rows = np.flatnonzero(tracks == q_track)
        q = rng.choice(q_rows, min(n_query, len(q_rows)), replace=False)
        query += q.tolist()
        query_y += [i] * len(q)
        query_tracks.append(q_track)
    as_int = lambda a: np.asarray(a, dtype=int)  # noqa: E731
    return Episode(as_int(chosen), as_int(support), as_int(support_y), as_int(query), as_int(query_y),
                   as_int(query_tracks))


def _support_rows(rng, tracks, support_tracks, k_shot, shot_unit, c):
    """Row indices of one class's support set (see `sample_episode`)."""
    if shot_unit == "recording":
        if k_shot > len(support_tracks):
            raise ValueError(f"class {c}: {k_shot} recording shots need {k_shot + 1} recordings, "
                             f"got {len(support_tracks) + 1}")
        return np.flatnonzero(np.isin(tracks, support_tracks[:k_shot])).tolist()
    # window shots, round-robin over the support recordings, no window twice
    available = [rng.permutation(np.flatnonzero(tracks == t)).tolist() for t in support_tracks]
    if k_shot > sum(map(len, available)):
        raise ValueError(f"class {c}: {k_shot} window shots requested, only {sum(map(len, available))} "
                         "windows outside the query recording")
    rows, j = [], 0
    while len(rows) < k_shot:
        bucket = available[j % len(available)]
        if bucket:
            rows.append(bucket.pop())
        j += 1
    return rows


def sample_episodes(n_episodes, labels, tracks, n_way, k_shot, n_query, seed=0, classes=None, shot_unit="window"):
    """A reproducible list of `n_episodes` episodes (see `sample_episode`)."""
    rng = np.random.default_rng(seed)
    return [sample_episode(rng, labels, tracks, n_way, k_shot, n_query, classes, shot_unit)
            for _ in range(n_episodes)]


# -- learned feature weights ------------------------------------------------------------------------


def feature_weights(z, labels, alpha=1.0, eps=0.1):
    """Per-feature weights ``((between + eps) / (within + eps)) ** alpha`` from training rows.

    Parameters
    ----------
    z : (n, D) array, z-scored training features (every feature has unit variance over the rows)
    labels : (n,) int array, their genres (>= 2 genres)
    alpha : float
        Sharpness; 1 (the default) was chosen in the development direction (0.5: weaker, 1.5-2:
        about the same as 1 there).
    eps : float
        Added to both variances so a feature that is nearly constant inside and across genres keeps
        a weight near 1 instead of an arbitrary ratio.

    Returns
    -------
    (D,) float32 array, the embedding scale of each feature (`weighted_features`).

    ``between`` is the variance of the genre means, ``within`` the mean over genres of the
    variance of the genre's rows.
    """
    z, labels = np.asarray(z, dtype=np.float64), np.asarray(labels)
    genres = np.unique(labels)
    if len(genres) < 2:
        raise ValueError(f"feature_weights needs rows of >= 2 genres, got {len(genres)}")
    means = np.stack([z[labels == g].mean(0) for g in genres])
    within = np.mean([z[labels == g].var(0) for g in genres], axis=0)
    return (((means.var(0) + eps) / (within + eps)) ** alpha).astype(np.float32)


def weighted_features(z, weights):
    """The few-shot embedding: z-scored features times `feature_weights` (same type as `z`)."""
    if isinstance(z, torch.Tensor):
        return z * torch.as_tensor(weights, dtype=z.dtype, device=z.device)
    return np.asarray(z) * np.asarray(weights)


# -- prototypes -------------------------------------------------------------------------------------


def prototype_logits(support_emb, support_labels, query_emb, n_classes, metric="euclidean", scale=COSINE_SCALE):
    """Scores (n_query, n_classes) of queries against the support set's prototypes.

    Exactly what the model does with `config.prototype_metric` (`prototypes.py`): Euclidean, minus
    the squared distance; cosine, `scale` times the cosine similarity to the mean of the
    L2-normalised support embeddings (the scale only matters for a loss; argmax is unaffected).
    """
    s, q = metric_space(support_emb, metric), metric_space(query_emb, metric)
    return prototype_scores(q, class_prototypes(s, support_labels, n_classes), metric, scale)


def prototypical_loss(support_emb, support_labels, query_emb, query_labels, n_classes, metric="euclidean"):
    """Prototypical Networks loss (Snell et al., 2017): cross-entropy of the prototype scores."""
    logits = prototype_logits(support_emb, support_labels, query_emb, n_classes, metric)
    return F.cross_entropy(logits, torch.as_tensor(query_labels, device=logits.device).long())


def batch_prototypical_loss(emb, labels, metric="euclidean"):
    """Prototypical loss with a training minibatch as the episode, leave-one-out prototypes.

    Every row is a query; its own class's prototype is the mean of the *other* rows of its class
    (rows whose class has no other row in the batch are skipped), other classes' prototypes are
    their full means. For squared Euclidean distance the leave-one-out distance has a closed form:
    ``e_i - (S_c - e_i) / (n_c - 1) = n_c / (n_c - 1) * (e_i - mean_c)``.

    Parameters
    ----------
    emb : (batch, D) tensor; labels : (batch,) int tensor
    metric : {"euclidean", "cosine"}

    Returns
    -------
    Scalar tensor (0 with a gradient path when no class has two rows).
    """
    labels = torch.as_tensor(labels, device=emb.device).long()
    present, inv = torch.unique(labels, return_inverse=True)  # batch classes -> 0..C-1
    counts = torch.bincount(inv, minlength=len(present)).to(emb.dtype)  # (C,)
    keep = counts[inv] >= 2
    if len(present) < 2 or not bool(keep.any()):
        return emb.sum() * 0.0
    e = metric_space(emb, metric)
    sums = torch.zeros(len(present), e.shape[1], dtype=e.dtype, device=e.device).index_add_(0, inv, e)
    rows = torch.arange(len(e), device=e.device)
    n_own = counts[inv]  # (batch,)
    if metric == "euclidean":
        d = torch.cdist(e, sums / counts[:, None]).pow(2)  # (batch, C)
        factor = torch.where(keep, n_own / (n_own - 1).clamp_min(1), torch.ones_like(n_own))
        d = d.index_put((rows, inv), d[rows, inv] * factor.pow(2))
        logits = -d
    else:
        protos = sums.unsqueeze(0).expand(len(e), -1, -1).clone()  # (batch, C, D)
        protos[rows, inv] = protos[rows, inv] - e  # leave the query out of its own prototype
        logits = COSINE_SCALE * torch.einsum("bd,bcd->bc", e, F.normalize(protos, dim=-1))
    return F.cross_entropy(logits[keep], inv[keep])


# -- evaluation -------------------------------------------------------------------------------------


def episode_accuracy(emb, episode, metric="euclidean", centre=False):
    """Fraction of the episode's queries whose nearest prototype is their class.

    `emb` is (n_rows, D), a tensor or array of embeddings of every row the episode indexes.
    `centre` subtracts the mean of the episode's support embeddings from support and query first
    (a prototype-rectification trick; it changes nothing for Euclidean distance, only for cosine).
    Returns (accuracy, per-query correctness (n_query_total,) bool array).
    """
    emb = torch.as_tensor(np.asarray(emb, dtype=np.float32)) if not isinstance(emb, torch.Tensor) else emb
    n_way = len(episode.classes)
    support, query = emb[episode.support], emb[episode.query]
    if centre:
        mid = support.mean(0, keepdim=True)
        support, query = support - mid, query - mid
    logits = prototype_logits(support, episode.support_labels, query, n_way, metric)
    correct = (logits.argmax(1).cpu().numpy() == episode.query_labels)
    return float(correct.mean()), correct


def logistic_regression_accuracy(x, episode, C=1.0):
    """Accuracy of a multinomial logistic regression fitted on the episode's support rows of `x`."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=500)
    clf.fit(x[episode.support], episode.support_labels)
    correct = clf.predict(x[episode.query]) == episode.query_labels
    return float(correct.mean()), correct


def mean_ci(values, z=1.96):
    """(mean, (low, high)) with the normal 95% interval of the mean: mean +- z * sd / sqrt(n)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    half = z * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return m, (m - half, m + half)


def cluster_ci(correct_by_cluster):
    """Mean and a t-based 95% interval over clusters (e.g. query recordings).

    Episodes drawn from a few recordings are far from independent, so the interval over episodes
    is too narrow; this one treats each query recording's mean accuracy as one observation.

    Parameters
    ----------
    correct_by_cluster : dict cluster -> list of 0/1 (or accuracies)
    """
    from scipy import stats

    per = np.asarray([np.mean(v) for v in correct_by_cluster.values()], dtype=float)
    m = float(per.mean())
    if len(per) < 2:
        return m, (float("nan"), float("nan")), len(per)
    half = float(stats.t.ppf(0.975, len(per) - 1) * per.std(ddof=1) / math.sqrt(len(per)))
    return m, (m - half, m + half), len(per)
