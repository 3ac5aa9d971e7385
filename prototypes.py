"""Prototype maths, in one place: the model's few-shot genres (`modeling.add_genre`) and the
few-shot benchmarks (`fewshot.py`) both use these functions (Snell et al., 2017).

    vectors              = the embeddings, L2-normalised first for "cosine"   (`metric_space`)
    prototype of a class = mean of its examples' vectors                      (n_classes, D)
    score of a query     = "euclidean": minus its squared Euclidean distance   (n_query, n_classes)
                           "cosine": COSINE_SCALE x its cosine similarity

Only torch is needed: this file ships to the Hub with the model.
"""

import torch
import torch.nn.functional as F

#: The scores a prototype can be compared by (`config.prototype_metric`).
PROTOTYPE_METRICS = ("euclidean", "cosine")

#: Cosine scores are multiplied by this fixed scale (the value fewshot.py's prototypical loss has
#: always used; no new hyperparameter). Cosine similarity lies in [-1, 1], so a softmax over raw
#: cosines can never favour one prototype more than e^2 = 7.4 times over another: on gtzan-mini-dev's
#: 6-s windows with ten leave-one-recording-out genre prototypes in the musicnn space, its top
#: probability averages 0.17 (uniform: 0.10); times 10, 0.81. The scale keeps the argmax (the
#: predicted genre); it is not fitted, so the probabilities are readable, not calibrated.
COSINE_SCALE = 10.0


def check_metric(metric):
    """`metric` if it is one of PROTOTYPE_METRICS, else ValueError naming the expected and received value."""
    if metric not in PROTOTYPE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, PROTOTYPE_METRICS))}, got {metric!r}")
    return metric


def metric_space(emb, metric="euclidean"):
    """(n, D) vectors whose class mean is the prototype: `emb` itself, or L2-normalised for "cosine"."""
    return F.normalize(emb, dim=-1) if check_metric(metric) == "cosine" else emb


def class_prototypes(emb, labels, n_classes):
    """(n_classes, D) class means of `emb` (n, D) for integer `labels` (n,) in [0, n_classes).

    Pass `metric_space(emb, metric)`: for cosine the prototype is the mean of L2-normalised vectors.
    A class without examples gets a zero prototype (its count is clamped to 1).
    """
    labels = torch.as_tensor(labels, device=emb.device).long()
    sums = torch.zeros(n_classes, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add_(0, labels, emb)
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).to(emb.dtype)
    return sums / counts[:, None]


def artist_weighted_prototypes(emb, labels, n_classes, songs, artists):
    """(n_classes, D) class means in which every artist counts once: the mean over a class's artists
    of the mean over each artist's songs of the mean of each song's rows of `emb` (n, D).

    `songs` and `artists` give every row's song and artist (any hashable ids, numpy arrays (n,)).
    One prolific artist then cannot define a genre (benchmarks/generalisation_study.py: +1 to +2
    points on artist-grouped folds of GTZAN over plain means). A class without rows gets zeros.
    """
    import numpy as np

    labels, songs, artists = np.asarray(labels), np.asarray(songs), np.asarray(artists)
    out = torch.zeros(n_classes, emb.shape[1], dtype=emb.dtype, device=emb.device)
    for c in range(n_classes):
        in_class = labels == c
        artist_means = []
        for a in np.unique(artists[in_class]):
            of_artist = in_class & (artists == a)
            song_means = [emb[torch.from_numpy(of_artist & (songs == s))].mean(0) for s in np.unique(songs[of_artist])]
            artist_means.append(torch.stack(song_means).mean(0))
        if artist_means:
            out[c] = torch.stack(artist_means).mean(0)
    return out


def prototype_scores(queries, prototypes, metric="euclidean", scale=COSINE_SCALE):
    """(n_query, n_classes) scores of queries (n_query, D) against prototypes (n_classes, D); higher is nearer.

    "euclidean": minus the squared Euclidean distance. "cosine": `scale` times the cosine similarity
    (both sides are L2-normalised here, so a prototype stored as a mean of unit vectors works as is).
    """
    if check_metric(metric) == "cosine":
        return scale * F.normalize(queries, dim=-1) @ F.normalize(prototypes, dim=-1).T
    return -torch.cdist(queries, prototypes).pow(2)

