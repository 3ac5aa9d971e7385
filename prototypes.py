"""Prototype maths, in one place: the model's few-shot genres (`modeling.add_genre`) and the
few-shot benchmarks (`fewshot.py`) both use these two functions (Snell et al., 2017).

    prototype of a class = mean of its examples' embeddings            (n_classes, D)
    score of a query     = minus its squared Euclidean distance to it   (n_query, n_classes)

Only torch is needed: this file ships to the Hub with the model.
"""

import torch


def class_prototypes(emb, labels, n_classes):
    """(n_classes, D) class means of `emb` (n, D) for integer `labels` (n,) in [0, n_classes).

    A class without examples gets a zero prototype (its count is clamped to 1).
    """
    labels = torch.as_tensor(labels, device=emb.device).long()
    sums = torch.zeros(n_classes, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add_(0, labels, emb)
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).to(emb.dtype)
    return sums / counts[:, None]


def distance_scores(queries, prototypes):
    """(n_query, n_classes) minus the squared Euclidean distance of each query (n_query, D) to each prototype."""
    return -torch.cdist(queries, prototypes).pow(2)
