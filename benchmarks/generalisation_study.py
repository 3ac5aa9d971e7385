"""Issue 20 study: which inputs, classifiers and training choices name genres by unseen artists.

Every split is by artist (benchmarks/artist_folds.py: StratifiedGroupKFold over recordings, a blank
artist its own group). A recording's prediction is the mean of its windows' (or patches')
probabilities. Accuracies come with 95% Wilson intervals over the pooled test recordings.

Paste-ready (from the repo root; 2 processes at most, one torch thread each; results go to
.cache/study/*.jsonl / *.json, and `report` prints the markdown tables):

    # 1. per-file cache: musicnn patch outputs (logits, penultimate, mean/max pools) + 59 features
    #    per 6-s window; ~100 s wall per shard on this machine
    .venv/bin/python benchmarks/generalisation_study.py cache --shard 0/2 &
    .venv/bin/python benchmarks/generalisation_study.py cache --shard 1/2 ; wait
    # 2. classifiers on the cached inputs (each appends one JSON line per configuration)
    .venv/bin/python benchmarks/generalisation_study.py lr --stage 1 --protocols P1 P2   # inputs, LR
    .venv/bin/python benchmarks/generalisation_study.py lr --stage 2 --protocols P1 P2   # weighting, patches
    .venv/bin/python benchmarks/generalisation_study.py lr --stage 3 --protocols P3
    .venv/bin/python benchmarks/generalisation_study.py ncm --protocols P1 P2 P3        # nearest class mean
    .venv/bin/python benchmarks/generalisation_study.py lda --protocols P1 P2 P3        # shrinkage LDA
    .venv/bin/python benchmarks/generalisation_study.py moe --variants today_hc+pen pen+tags pen+tags_strong_reg --protocols P2 --seeds 0 1 2
    .venv/bin/python benchmarks/generalisation_study.py moe --variants today_hc+pen pen+tags pen+tags_strong_reg --protocols P1 --seeds 0
    .venv/bin/python benchmarks/generalisation_study.py zeroshot
    .venv/bin/python benchmarks/generalisation_study.py novelty --rep pen+tags --seeds 0 1 2 --out .cache/study/novelty_pen+tags.json
    .venv/bin/python benchmarks/generalisation_study.py fewshot --rep pen+tags --seeds 0 1 2 --draws 5 --out .cache/study/fewshot_pen+tags.json
    .venv/bin/python benchmarks/generalisation_study.py report

Protocols:
    P1  artist-grouped 5-fold CV, 10 GTZAN genres, 350 dev recordings (target >= 0.80)
    P2  trained on all GTZAN dev, tested on emotify-dev classical/pop/rock (60) among 10 genres (>= 0.75)
    P3  all 430 recordings, 11 genres (GTZAN 10 + electronic), artist-grouped 5-fold CV (>= 0.80),
        with per-collection accuracy inside P3
Model choice (logistic regression C) is made on inner artist-grouped folds of each training split
only (never on the test fold); P2's C is chosen on artist-grouped folds of GTZAN.
Novelty: GTZAN-only model; threshold = 95th percentile of the novelty scores of held-out
(artist-grouped out-of-fold) GTZAN songs; reported: share of emotify electronic flagged, share of
in-vocabulary held-out songs flagged (outer folds, threshold from inner folds).
Few-shot: GTZAN-only model + an "electronic" prototype from k emotify electronic excerpts drawn by
artist; queries are electronic excerpts by other artists plus in-vocabulary songs.

Caches: .cache/study/files/<rel>.npz (git-ignored). Research use of the audio only: no audio is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import artist_folds as af  # noqa: E402

CACHE = ROOT / ".cache" / "study"
CLIP = 6.0
SR = 22050


# --------------------------------------------------------------------------------------------
# 1. cache: per file, per 6-s window: the 59 features; per 3-s patch: musicnn outputs
# --------------------------------------------------------------------------------------------


def cache_path(rec) -> Path:
    return CACHE / "files" / (rec.rel + ".npz")


def cache_one(net, rec):
    import torch
    from features import extract_song, load_audio
    from frontend import window_patches

    y = load_audio(rec.path, sr=SR)
    song = extract_song(y, SR, CLIP)
    per_window = [window_patches(w, SR) for w in song.audio]
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(per_window)])
    patches = torch.from_numpy(np.concatenate(per_window))
    outs = {k: [] for k in ("logits", "penultimate", "mean_pool", "max_pool")}
    with torch.inference_mode():
        for i in range(0, len(patches), 2):
            o = net(patches[i:i + 2])
            for k in outs:
                outs[k].append(getattr(o, k).float().numpy())
    arrays = {k: np.concatenate(v).astype(np.float32) for k, v in outs.items()}
    path = cache_path(rec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=song.features, owner=owner, seconds=len(y) / SR, **arrays)
    tmp.replace(path)


def cmd_cache(args):
    import torch
    from frontend import load_musicnn

    torch.set_num_threads(1)
    i, n = (int(v) for v in args.shard.split("/"))
    recs = af.load_recordings()[i::n]
    net = load_musicnn()
    t0 = time.time()
    for j, rec in enumerate(recs):
        if cache_path(rec).is_file():
            continue
        cache_one(net, rec)
        if j % 20 == 0:
            print(f"[{i}/{n}] {j}/{len(recs)} {rec.rel} {time.time() - t0:.0f}s", flush=True)
    print(f"[{i}/{n}] done {len(recs)} in {time.time() - t0:.0f}s", flush=True)



# --------------------------------------------------------------------------------------------
# 2. representations from the cache
# --------------------------------------------------------------------------------------------

PARTS = ("hc", "pen", "tags", "mean", "max")
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
# Zero-shot reference: MSD tags standing for GTZAN genres (classical and reggae have no tag; disco is
# read as "dance", the nearest MSD tag); a genre's score is the max sigmoid over its tags.
ZERO_SHOT = {"blues": ["blues"], "country": ["country"], "disco": ["dance"], "hiphop": ["Hip-Hop"],
             "jazz": ["jazz"], "metal": ["metal", "heavy metal"], "pop": ["pop"],
             "rock": ["rock", "classic rock", "hard rock"]}


class Store:
    """Every recording's cached arrays; `x(name, level)` gives per-example rows and their recording."""

    def __init__(self):
        self.recs = af.load_recordings()
        self.groups = af.artist_groups(self.recs)
        self.genre = np.array([r.genre for r in self.recs])
        self.coll = np.array([r.collection for r in self.recs])
        self.data = []
        for r in self.recs:
            z = np.load(cache_path(r))
            self.data.append({k: z[k] for k in ("features", "owner", "logits", "penultimate", "mean_pool", "max_pool")})
        self._memo = {}

    def part(self, i, name, level):
        d = self.data[i]
        src = {"pen": "penultimate", "tags": "logits", "mean": "mean_pool", "max": "max_pool"}
        if name == "hc":
            return d["features"] if level == "window" else d["features"][d["owner"]]
        a = d[src[name]]
        if level == "patch":
            return a
        nw = len(d["features"])
        out = np.zeros((nw, a.shape[1]), np.float32)
        np.add.at(out, d["owner"], a)
        return out / np.bincount(d["owner"], minlength=nw)[:, None]

    def x(self, rep, level="window"):
        """(X rows, owner recording index) for representation `rep` ('pen+tags', ...)."""
        key = (rep, level)
        if key not in self._memo:
            rows, owner = [], []
            for i in range(len(self.recs)):
                r = np.concatenate([self.part(i, p, level) for p in rep.split("+")], axis=1)
                rows.append(r)
                owner.append(np.full(len(r), i))
            self._memo[key] = (np.concatenate(rows).astype(np.float32), np.concatenate(owner))
        return self._memo[key]

    def song_taggram(self, i):
        return 1 / (1 + np.exp(-self.data[i]["logits"].mean(0)))  # mean-logit sigmoid


# --------------------------------------------------------------------------------------------
# 3. logistic regression with artist-grouped inner choice of C
# --------------------------------------------------------------------------------------------

C_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def example_weights(st, owner, rec_idx, labels, weighting):
    """Per-example training weights: 'none', 'recording' (each recording counts once) or 'artist'
    (each artist once within its genre, and each of its recordings equally)."""
    if weighting == "none":
        return None
    counts = np.bincount(owner, minlength=len(st.recs))
    w = 1.0 / counts[owner]
    if weighting == "artist":
        aw = af.artist_weights(labels[rec_idx], st.groups[rec_idx])
        per_rec = np.zeros(len(st.recs))
        per_rec[rec_idx] = aw
        w = w * per_rec[owner]
    return w * len(w) / w.sum()


def fit_lr(X, y, w, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    m.fit(X, y, logisticregression__sample_weight=w)
    return m


def song_proba(model, X, owner, rec_idx):
    """(len(rec_idx), n_classes) mean window probabilities per recording, and mean decision values."""
    m = np.isin(owner, rec_idx)
    P = model.predict_proba(X[m])
    D = model.decision_function(X[m])
    o = owner[m]
    pos = {r: j for j, r in enumerate(rec_idx)}
    idx = np.array([pos[v] for v in o])
    out = np.zeros((len(rec_idx), P.shape[1]))
    dec = np.zeros((len(rec_idx), D.shape[1]))
    np.add.at(out, idx, P)
    np.add.at(dec, idx, D)
    n = np.bincount(idx, minlength=len(rec_idx))[:, None]
    return out / n, dec / n


def train_lr(st, rep, level, weighting, train_idx, labels, C):
    X, owner = st.x(rep, level)
    m = np.isin(owner, train_idx)
    w = example_weights(st, owner[m], train_idx, labels, weighting)
    return fit_lr(X[m], labels[owner[m]], w, C)


def choose_C(st, rep, level, weighting, train_idx, labels, seed, k=3):
    """C with the best artist-grouped inner-CV recording accuracy (ties: the smaller C)."""
    X, owner = st.x(rep, level)
    correct = {C: 0 for C in C_GRID}
    for itr, ite in af.artist_kfold(labels[train_idx], st.groups[train_idx], k=k, seed=seed + 100):
        itr, ite = train_idx[itr], train_idx[ite]
        for C in C_GRID:
            model = train_lr(st, rep, level, weighting, itr, labels, C)
            P, _ = song_proba(model, X, owner, ite)
            correct[C] += int((model.classes_[P.argmax(1)] == labels[ite]).sum())
    best = max(C_GRID, key=lambda C: (correct[C], -C))
    return best, correct


def result(pred, truth, extra=None):
    k, n = int((pred == truth).sum()), len(truth)
    lo, hi = af.wilson(k, n)
    r = {"acc": k / n, "k": k, "n": n, "ci": [round(lo, 3), round(hi, 3)]}
    r.update(extra or {})
    return r


def cv_lr(st, idx, labels, rep, level, weighting, seeds, fixed_C=None):
    """Artist-grouped 5-fold CV over `idx` (one pass per seed). Returns pooled result + per-seed counts."""
    X, owner = st.x(rep, level)
    per_seed, preds, truths, Cs, colls = [], [], [], [], []
    for seed in seeds:
        k_seed = 0
        for tr, te in af.artist_kfold(labels[idx], st.groups[idx], k=5, seed=seed):
            tr, te = idx[tr], idx[te]
            C = fixed_C if fixed_C else choose_C(st, rep, level, weighting, tr, labels, seed)[0]
            Cs.append(C)
            model = train_lr(st, rep, level, weighting, tr, labels, C)
            P, _ = song_proba(model, X, owner, te)
            p = model.classes_[P.argmax(1)]
            preds.append(p)
            truths.append(labels[te])
            colls.append(st.coll[te])
            k_seed += int((p == labels[te]).sum())
        per_seed.append(k_seed)
    pred, truth, coll = np.concatenate(preds), np.concatenate(truths), np.concatenate(colls)
    extra = {"per_seed_correct": per_seed, "per_seed_n": len(idx), "C_chosen": [float(c) for c in Cs]}
    for c in np.unique(coll):
        m = coll == c
        extra[f"acc_{c}"] = result(pred[m], truth[m])
    return result(pred, truth, extra)


# --------------------------------------------------------------------------------------------
# 4. the protocols
# --------------------------------------------------------------------------------------------


def idx_gtzan(st):
    return np.flatnonzero(st.coll == "gtzan")


def idx_emotify_known(st):
    return np.flatnonzero((st.coll == "emotify") & np.isin(st.genre, GTZAN_GENRES))


def idx_electronic(st):
    return np.flatnonzero((st.coll == "emotify") & (st.genre == "electronic"))


def p2_lr(st, rep, level, weighting, seeds):
    """Train on all GTZAN (C from artist-grouped inner folds of GTZAN, per seed), test on emotify c/p/r."""
    X, owner = st.x(rep, level)
    tr, te = idx_gtzan(st), idx_emotify_known(st)
    out = []
    for seed in seeds:
        C, _ = choose_C(st, rep, level, weighting, tr, st.genre, seed, k=5)
        model = train_lr(st, rep, level, weighting, tr, st.genre, C)
        P, _ = song_proba(model, X, owner, te)
        pred = model.classes_[P.argmax(1)]
        out.append((C, pred))
    # the seeds only change the inner folds (C); report the first and the spread
    r = result(out[0][1], st.genre[te], {"C_chosen": [float(c) for c, _ in out],
                                          "per_seed_correct": [int((p == st.genre[te]).sum()) for _, p in out],
                                          "per_seed_n": len(te)})
    conf = {}
    for t, p in zip(st.genre[te], out[0][1]):
        if t != p:
            conf[f"{t}->{p}"] = conf.get(f"{t}->{p}", 0) + 1
    r["errors"] = conf
    return r


def zero_shot(st):
    tags = list(__import__("frontend").MSD_TAGS)
    genres = list(ZERO_SHOT)
    out = {}
    for name, idx in (("P1_gtzan_8genres", idx_gtzan(st)), ("P2_emotify_pop_rock", idx_emotify_known(st))):
        idx = idx[np.isin(st.genre[idx], genres)]
        pred = []
        for i in idx:
            t = st.song_taggram(i)
            pred.append(genres[int(np.argmax([max(t[tags.index(x)] for x in ZERO_SHOT[g]) for g in genres]))])
        out[name] = result(np.array(pred), st.genre[idx])
    return out



STAGE1 = ["hc", "pen", "tags", "pen+tags", "hc+pen", "hc+pen+tags", "mean", "max", "mean+max", "pen+tags+mean+max"]
STAGE2 = ["pen", "pen+tags", "hc+pen", "hc+pen+tags"]


def lr_configs(stage):
    if stage == "1":
        return [(r, "window", "none") for r in STAGE1]
    if stage == "2":
        return [(r, lv, w) for r in STAGE2 for lv in ("window", "patch") for w in ("none", "recording", "artist")
                if (lv, w) != ("window", "none") and (lv == "window" or not r.startswith("hc"))]
    if stage == "3":  # P3 for the main candidates
        return [(r, "window", w) for r in ("pen", "pen+tags", "hc+pen", "hc+pen+tags") for w in ("none", "artist")]
    raise ValueError(stage)


def cmd_lr(args):
    """Logistic-regression grid on P1, P2 (and P3 unless --no-p3); one JSON line per config."""
    st = Store()
    done = set()
    out = Path(args.out)
    if out.is_file():
        done = {(d["rep"], d["level"], d["weighting"], d["protocol"]) for d in map(json.loads, out.read_text().splitlines())}
    g = idx_gtzan(st)
    labels11 = st.genre
    allidx = np.arange(len(st.recs))
    for rep, level, weighting in lr_configs(args.stage):
        for proto in args.protocols:
            if (rep, level, weighting, proto) in done:
                continue
            t0 = time.time()
            if proto == "P1":
                r = cv_lr(st, g, st.genre, rep, level, weighting, args.seeds)
            elif proto == "P2":
                r = p2_lr(st, rep, level, weighting, args.seeds)
            else:
                r = cv_lr(st, allidx, labels11, rep, level, weighting, args.seeds)
            r.update(rep=rep, level=level, weighting=weighting, protocol=proto, seconds=round(time.time() - t0, 1),
                     command=f"generalisation_study.py lr --stage {args.stage} --protocols {proto} --seeds "
                             + " ".join(map(str, args.seeds)))
            print(f"{proto} {rep:22s} {level:6s} {weighting:9s} {r['acc']:.3f} {r['ci']} {r['k']}/{r['n']} "
                  f"seeds {r['per_seed_correct']} C {sorted(set(r['C_chosen']))} {r['seconds']}s", flush=True)
            with open(out, "a") as f:
                f.write(json.dumps(r, default=float) + "\n")



# --------------------------------------------------------------------------------------------
# 5. "none of these" and a new genre from a few songs (GTZAN-only models)
# --------------------------------------------------------------------------------------------


def song_vectors(st, rep, idx, normalise, mean=None, std=None):
    """One vector per recording: mean of its windows (z-scored first when mean/std are given;
    L2-normalised windows when `normalise`)."""
    X, owner = st.x(rep, "window")
    out = []
    for i in idx:
        v = X[owner == i]
        if mean is not None:
            v = (v - mean) / std
        if normalise:
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
        out.append(v.mean(0))
    return np.array(out)


def novelty_scores(model, st, rep, tr, idx, emb_stats):
    """Per recording in idx: dict of novelty scores (higher = more novel)."""
    X, owner = st.x(rep, "window")
    P, D = song_proba(model, X, owner, idx)
    sc = {"msp": 1 - P.max(1), "energy": -np.log(np.exp(D - D.max(1, keepdims=True)).sum(1)) - D.max(1)}
    mu, sd, means, prec, protos = emb_stats
    E = song_vectors(st, "pen", idx, False, mu, sd)
    d = E[:, None, :] - means[None]
    sc["mahalanobis"] = np.einsum("nkd,de,nke->nk", d, prec, d).min(1)
    C = song_vectors(st, "pen", idx, True)
    C = C / np.linalg.norm(C, axis=1, keepdims=True)
    sc["cosine"] = 1 - (C @ protos.T).max(1)
    T = song_vectors(st, "pen", tr, True)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    sc["knn5_cosine"] = 1 - np.sort(C @ T.T, axis=1)[:, -5:].mean(1)
    for rep in ("hc+pen", "pen+tags"):  # the NCM classifier's own score: 1 - cosine to the nearest class mean
        Xr, ow = st.x(rep, "window")
        m = np.isin(ow, tr)
        mu_r, sd_r = Xr[m].mean(0), Xr[m].std(0) + 1e-6
        Vtr = song_vectors(st, rep, tr, True, mu_r, sd_r)
        Vq = song_vectors(st, rep, idx, True, mu_r, sd_r)
        gen = st.genre[tr]
        cents = np.array([Vtr[gen == c].mean(0) for c in np.unique(gen)])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        Vq /= np.linalg.norm(Vq, axis=1, keepdims=True)
        sc[f"ncm_cosine_{rep}_z"] = 1 - (Vq @ cents.T).max(1)
    return sc


def embedding_stats(st, tr):
    from sklearn.covariance import LedoitWolf

    X, owner = st.x("pen", "window")
    m = np.isin(owner, tr)
    mu, sd = X[m].mean(0), X[m].std(0) + 1e-6
    E = song_vectors(st, "pen", tr, False, mu, sd)
    genres = st.genre[tr]
    classes = np.unique(genres)
    means = np.array([E[genres == c].mean(0) for c in classes])
    resid = E - means[np.searchsorted(classes, genres)]
    prec = LedoitWolf().fit(resid).precision_
    C = song_vectors(st, "pen", tr, True)
    protos = np.array([C[genres == c].mean(0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    return mu, sd, means, prec, protos


def cmd_novelty(args):
    """GTZAN-only LR (args.rep); threshold = 95th percentile of inner-fold held-out in-vocabulary scores."""
    from sklearn.metrics import roc_auc_score

    st = Store()
    g, el, known = idx_gtzan(st), idx_electronic(st), idx_emotify_known(st)
    res = {}
    for seed in args.seeds:
        for tr, te in af.artist_kfold(st.genre[g], st.groups[g], k=5, seed=seed):
            tr, te = g[tr], g[te]
            C, _ = choose_C(st, args.rep, "window", "none", tr, st.genre, seed)
            oof = {}
            for itr, ite in af.artist_kfold(st.genre[tr], st.groups[tr], k=5, seed=seed + 200):
                itr, ite = tr[itr], tr[ite]
                m = train_lr(st, args.rep, "window", "none", itr, st.genre, C)
                for k, v in novelty_scores(m, st, args.rep, itr, ite, embedding_stats(st, itr)).items():
                    oof.setdefault(k, []).append(v)
            m = train_lr(st, args.rep, "window", "none", tr, st.genre, C)
            stats = embedding_stats(st, tr)
            s_te = novelty_scores(m, st, args.rep, tr, te, stats)
            s_el = novelty_scores(m, st, args.rep, tr, el, stats)
            s_kn = novelty_scores(m, st, args.rep, tr, known, stats)
            # fusions: each score standardised by its held-out in-vocabulary (inner OOF) distribution, averaged
            for a_, b_ in (("energy", "ncm_cosine_hc+pen_z"), ("energy", "cosine"), ("msp", "ncm_cosine_hc+pen_z")):
                ref = {c: (np.concatenate(oof[c]).mean(), np.concatenate(oof[c]).std() + 1e-12) for c in (a_, b_)}
                fz = lambda d: ((d[a_] - ref[a_][0]) / ref[a_][1] + (d[b_] - ref[b_][0]) / ref[b_][1]) / 2
                name = f"fused_{a_}+{b_}"
                oof[name] = [fz({a_: np.concatenate(oof[a_]), b_: np.concatenate(oof[b_])})]
                for d in (s_te, s_el, s_kn):
                    d[name] = fz(d)
            for k0 in list(s_te):
              for pct in (90, 95):
                k = f"{k0}@p{pct}"
                thr = np.percentile(np.concatenate(oof[k0]), pct)
                s_te[k], s_el[k], s_kn[k] = s_te[k0], s_el[k0], s_kn[k0]
                r = res.setdefault(k, {"invocab_flag": 0, "invocab_n": 0, "elec_flag": 0, "elec_n": 0,
                                       "emo_known_flag": 0, "emo_known_n": 0, "auroc": []})
                r["invocab_flag"] += int((s_te[k] > thr).sum()); r["invocab_n"] += len(te)
                r["elec_flag"] += int((s_el[k] > thr).sum()); r["elec_n"] += len(el)
                r["emo_known_flag"] += int((s_kn[k] > thr).sum()); r["emo_known_n"] += len(known)
                r["auroc"].append(roc_auc_score(np.r_[np.zeros(len(te)), np.ones(len(el))], np.r_[s_te[k], s_el[k]]))
    for k, r in res.items():
        r["auroc"] = float(np.mean(r["auroc"]))
        for part in ("invocab", "elec", "emo_known"):
            r[f"{part}_rate"] = r[f"{part}_flag"] / r[f"{part}_n"]
            r[f"{part}_ci"] = [round(v, 3) for v in af.wilson(r[f"{part}_flag"] // len(args.seeds),
                                                                r[f"{part}_n"] // len(args.seeds))]
        print(f"{args.rep} {k:12s} electronic flagged {r['elec_rate']:.3f} {r['elec_ci']}  in-vocab held-out "
              f"flagged {r['invocab_rate']:.3f} {r['invocab_ci']}  emotify c/p/r flagged {r['emo_known_rate']:.3f}  "
              f"AUROC {r['auroc']:.3f}", flush=True)
    Path(args.out).write_text(json.dumps({"rep": args.rep, "seeds": args.seeds, "scores": res}, indent=1, default=float))


FEW_SPACES = {"pen": ("pen", False), "tags": ("tags", False), "pen+tags": ("pen+tags", False),
              "pen+tags_z": ("pen+tags", True), "hc+pen_z": ("hc+pen", True)}


def cmd_fewshot(args):
    """k-shot 'electronic' prototype on a GTZAN-only LR: spaces x metrics x rules, draws by artist."""
    st = Store()
    g, el, known = idx_gtzan(st), idx_electronic(st), idx_emotify_known(st)
    rng = np.random.default_rng(0)
    acc = {}
    for seed in args.seeds:
        for tr, te in af.artist_kfold(st.genre[g], st.groups[g], k=5, seed=seed):
            tr, te = g[tr], g[te]
            C, _ = choose_C(st, args.rep, "window", "none", tr, st.genre, seed)
            model = train_lr(st, args.rep, "window", "none", tr, st.genre, C)
            X, owner = st.x(args.rep, "window")
            base_te = model.classes_[song_proba(model, X, owner, te)[0].argmax(1)]
            base_kn = model.classes_[song_proba(model, X, owner, known)[0].argmax(1)]
            classes = model.classes_
            # the recommended 10-genre classifier: NCM, hc+pen z-scored, cosine, artist-weighted means
            ncm_te = ncm_fit_predict(st, "hc+pen", True, "cosine", "artist", tr, te, st.genre)
            ncm_kn = ncm_fit_predict(st, "hc+pen", True, "cosine", "artist", tr, known, st.genre)
            for qname, pr, q in (("gtzan", ncm_te, te), ("emo_known", ncm_kn, known)):
                a = acc.setdefault(("ncm_hc+pen_alone", "-", "-", 0, qname), [0, 0])
                a[0] += int((pr == st.genre[q]).sum()); a[1] += len(q)
            for sname, (rep, z) in FEW_SPACES.items():
                Xs, ow = st.x(rep, "window")
                m = np.isin(ow, tr)
                mu, sd = (Xs[m].mean(0), Xs[m].std(0) + 1e-6) if z else (None, None)
                for metric in ("cosine", "euclidean"):
                    norm = metric == "cosine"
                    V = {i: v for i, v in zip(np.r_[tr, te, el, known],
                                              song_vectors(st, rep, np.r_[tr, te, el, known], norm, mu, sd))}
                    # trained genres' prototypes: the mean of the genre's artist means (as the NCM classifier)
                    gp = np.array([np.mean([np.mean([V[i] for i in tr if st.genre[i] == c and st.groups[i] == a], 0)
                                            for a in sorted({st.groups[i] for i in tr if st.genre[i] == c})], 0)
                                   for c in classes])

                    def sim(q, P):
                        if norm:
                            return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (P / np.linalg.norm(P, axis=1, keepdims=True)).T
                        return -((q[:, None] - P[None]) ** 2).sum(-1)

                    for qname, q in (("gtzan", te), ("emo_known", known)):  # the 10-genre NCM before adding one
                        S10 = sim(np.array([V[i] for i in q]), gp)
                        a = acc.setdefault((sname, metric, "ncm10_alone", 0, qname), [0, 0])
                        a[0] += int((classes[S10.argmax(1)] == st.genre[q]).sum()); a[1] += len(q)
                    for k in (1, 5, 10):
                        for draw in range(args.draws):
                            sup = rng.choice(el, size=k, replace=False)
                            arts = set(st.groups[sup])
                            q_el = np.array([i for i in el if st.groups[i] not in arts])
                            if len(q_el) == 0:
                                continue
                            ep = np.mean([V[i] for i in sup], 0)[None]
                            P11 = np.r_[gp, ep]
                            for qname, q, base, nbase in (("elec", q_el, None, None), ("gtzan", te, base_te, ncm_te),
                                                          ("emo_known", known, base_kn, ncm_kn)):
                                Q = np.array([V[i] for i in q])
                                S = sim(Q, P11)
                                nearest = np.where(S.argmax(1) == len(classes), "electronic", classes[S.argmax(1).clip(max=len(classes) - 1)])
                                is_e = S[:, -1] > S[:, :-1].max(1)
                                if base is None:
                                    lr_pred = np.full(len(q), "x")
                                else:
                                    lr_pred = base
                                hybrid = np.where(is_e, "electronic", lr_pred)
                                truth = st.genre[q]
                                hybrid_ncm = np.where(is_e, "electronic", lr_pred if nbase is None else nbase)
                                for rule, pred in (("nearest_of_11", nearest), ("proto_vs_trained", hybrid),
                                                   ("proto_vs_trained_ncm_base", hybrid_ncm)):
                                    key = (sname, metric, rule, k, qname)
                                    a = acc.setdefault(key, [0, 0])
                                    a[0] += int((pred == truth).sum()); a[1] += len(q)
                            if sname == "pen" and metric == "cosine" and k == 1 and draw == 0:
                                for qname, base, q in (("gtzan", base_te, te), ("emo_known", base_kn, known)):
                                    a = acc.setdefault(("lr_alone", "-", "-", 0, qname), [0, 0])
                                    a[0] += int((base == st.genre[q]).sum()); a[1] += len(q)
    rows = []
    for key, (kk, n) in sorted(acc.items(), key=lambda t: str(t[0])):
        rows.append({"space": key[0], "metric": key[1], "rule": key[2], "k": key[3], "queries": key[4],
                     "acc": kk / n, "correct": kk, "n": n})
    base = {r["queries"]: r["acc"] for r in rows if r["space"] == "lr_alone"}
    ncm10 = {(r["space"], r["metric"], r["queries"]): r["acc"] for r in rows if r["rule"] == "ncm10_alone"}
    ncmb = {r["queries"]: r["acc"] for r in rows if r["space"] == "ncm_hc+pen_alone"}
    for r in rows:
        if r["queries"] != "elec" and r["space"] != "lr_alone":
            r["delta_vs_lr"] = r["acc"] - base[r["queries"]]
            if r["rule"] == "nearest_of_11":
                r["delta_vs_ncm10"] = r["acc"] - ncm10[(r["space"], r["metric"], r["queries"])]
            if r["rule"] == "proto_vs_trained_ncm_base":
                r["delta_vs_ncm_base"] = r["acc"] - ncmb[r["queries"]]
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))
    print("baseline LR", base)
    table = {}
    for r in rows:
        if r["space"] in ("lr_alone", "ncm_hc+pen_alone") or r["rule"] == "ncm10_alone":
            continue
        table.setdefault((r["space"], r["metric"], r["rule"], r["k"]), {})[r["queries"]] = r
    for key, d in table.items():
        print(f"{key[0]:11s} {key[1]:9s} {key[2]:17s} k={key[3]:2d}  elec {d['elec']['acc']:.3f} ({d['elec']['n']})  "
              f"gtzan {d['gtzan']['acc']:.3f} ({d['gtzan']['delta_vs_lr']*100:+.1f} pt)  "
              f"emotify c/p/r {d['emo_known']['acc']:.3f} ({d['emo_known']['delta_vs_lr']*100:+.1f} pt)"
              + (f"  vs NCM-10 in this space: gtzan {d['gtzan']['delta_vs_ncm10']*100:+.1f} pt, emotify "
                 f"{d['emo_known']['delta_vs_ncm10']*100:+.1f} pt" if key[2] == "nearest_of_11" else "")
              + (f"  vs NCM hc+pen base: gtzan {d['gtzan']['delta_vs_ncm_base']*100:+.1f} pt, emotify "
                 f"{d['emo_known']['delta_vs_ncm_base']*100:+.1f} pt" if key[2] == "proto_vs_trained_ncm_base" else ""),
              flush=True)
    print("baseline NCM hc+pen", ncmb)
    for r in rows:
        if r["rule"] == "ncm10_alone":
            print(f"NCM-10 alone {r['space']:11s} {r['metric']:9s} {r['queries']:9s} {r['acc']:.3f} ({r['correct']}/{r['n']})")



# --------------------------------------------------------------------------------------------
# 6. nearest class mean (no fitted weights): the few-shot study's finding, on P1-P3
# --------------------------------------------------------------------------------------------


def ncm_fit_predict(st, rep, z, metric, weighting, tr, te, labels):
    """Class means of training song vectors ('artist': the mean of the genre's artist means), then the
    nearest mean (cosine: of L2-normalised vectors; euclidean) for each test song."""
    X, owner = st.x(rep, "window")
    m = np.isin(owner, tr)
    mu, sd = (X[m].mean(0), X[m].std(0) + 1e-6) if z else (None, None)
    norm = metric == "cosine"
    Vtr = song_vectors(st, rep, tr, norm, mu, sd)
    Vte = song_vectors(st, rep, te, norm, mu, sd)
    classes = np.unique(labels[tr])
    cents = []
    for c in classes:
        mc = labels[tr] == c
        if weighting == "artist":
            gr = st.groups[tr][mc]
            cents.append(np.mean([Vtr[mc][gr == a].mean(0) for a in np.unique(gr)], 0))
        else:
            cents.append(Vtr[mc].mean(0))
    P = np.array(cents)
    if norm:
        S = (Vte / np.linalg.norm(Vte, axis=1, keepdims=True)) @ (P / np.linalg.norm(P, axis=1, keepdims=True)).T
    else:
        S = -((Vte[:, None] - P[None]) ** 2).sum(-1)
    return classes[S.argmax(1)]


def protocol_result(st, proto, seeds, g, allidx, known, fit_predict):
    """One method's result on a protocol: P2 trains on GTZAN (`g`) and tests emotify's known genres;
    P1 (GTZAN) and P3 (everything) are artist 5-fold CV per seed, pooled, with per-collection accuracy.
    `fit_predict(train_idx, test_idx, seed)` returns the test recordings' predicted genres."""
    if proto == "P2":
        pred = fit_predict(g, known, seeds[0])
        return result(pred, st.genre[known], {"per_seed_correct": [int((pred == st.genre[known]).sum())],
                                              "per_seed_n": len(known)})
    idx = g if proto == "P1" else allidx
    preds, truths, colls, per = [], [], [], []
    for seed in seeds:
        ks = 0
        for tr, te in af.artist_kfold(st.genre[idx], st.groups[idx], k=5, seed=seed):
            tr, te = idx[tr], idx[te]
            p_ = fit_predict(tr, te, seed)
            preds.append(p_); truths.append(st.genre[te]); colls.append(st.coll[te])
            ks += int((p_ == st.genre[te]).sum())
        per.append(ks)
    pred, truth, coll = map(np.concatenate, (preds, truths, colls))
    extra = {"per_seed_correct": per, "per_seed_n": len(idx)}
    for c in np.unique(coll):
        extra[f"acc_{c}"] = result(pred[coll == c], truth[coll == c])
    return result(pred, truth, extra)


def cmd_ncm(args):
    st = Store()
    g, allidx, known = idx_gtzan(st), np.arange(len(st.recs)), idx_emotify_known(st)
    out = Path(args.out)
    for rep in ["pen", "tags", "pen+tags", "hc+pen", "hc+pen+tags", "mean+max", "pen+tags+mean+max"]:
        for z in (True, False):
            for metric in ("cosine", "euclidean"):
                for weighting in ("none", "artist"):
                    for proto in args.protocols:
                        r = protocol_result(st, proto, args.seeds, g, allidx, known,
                                            lambda tr, te, _seed: ncm_fit_predict(st, rep, z, metric, weighting, tr, te, st.genre))
                        r.update(rep=rep, zscore=z, metric=metric, weighting=weighting, protocol=proto,
                                 command=f"generalisation_study.py ncm --protocols {proto} --seeds "
                                         + " ".join(map(str, args.seeds)))
                        print(f"NCM {proto} {rep:18s} z={int(z)} {metric:9s} {weighting:7s} {r['acc']:.3f} "
                              f"{r['k']}/{r['n']} per-seed {r['per_seed_correct']}"
                              + (f" gtzan {r['acc_gtzan']['acc']:.3f} emotify {r['acc_emotify']['acc']:.3f}"
                                 if proto == "P3" else ""), flush=True)
                        with open(out, "a") as f:
                            f.write(json.dumps(r, default=float) + "\n")



# --------------------------------------------------------------------------------------------
# 7. the MoE through the project's own training loop
# --------------------------------------------------------------------------------------------

MOE_VARIANTS = {  # name: (inputs, extra flags)
    "today_hc+pen": ("hc+pen", []),
    "pen+tags": ("pen+tags", []),
    "pen+tags_strong_reg": ("pen+tags", ["--weight-decay", "0.05", "--encoder-dropout", "0.5",
                                          "--classifier-dropout", "0.3", "--epochs", "60", "--t-max", "60"]),
    "hc+pen+tags": ("hc+pen+tags", []),
    # artist weighting through the unchanged loop: each training window repeated max(1, round(w)) times,
    # w = artist_folds.artist_weights of its recording (each artist counts ~equally within its genre)
    "today_hc+pen_artist_oversample": ("hc+pen", ["@artist_oversample"]),
}


def moe_song_probs(st, rep, tr, te, labels, flags, seed, log=lambda *a: None):
    """Train one MoE (project's fit) on the windows of `tr` (early stopping on an artist-grouped fifth
    of `tr`), return (te song probabilities, classes)."""
    import torch
    try:
        from workbench.training import build_model, fit
        from workbench.settings import parse_settings
    except ImportError:  # the layout before the workbench move
        from train import build_model, fit, parse_settings

    X, owner = st.x(rep, "window")
    classes = np.unique(labels[tr])
    oversample = "@artist_oversample" in flags
    flags = [f for f in flags if not f.startswith("@")]
    s = parse_settings(["--seed", str(seed)] + flags)
    s.model = dict(s.model, frontend="none", num_features=X.shape[1], clip_seconds=CLIP,
                   prototype_space="features", prototype_metric="euclidean")
    itr, iva = next(af.artist_kfold(labels[tr], st.groups[tr], k=5, seed=seed + 300))
    itr, iva = tr[itr], tr[iva]

    def tensors(idx):
        m = np.isin(owner, idx)
        y = np.searchsorted(classes, labels[owner[m]])
        return torch.from_numpy(X[m]).float(), torch.from_numpy(y).long()

    train, val = tensors(itr), tensors(iva)
    if oversample:
        w = np.zeros(len(st.recs))
        w[itr] = af.artist_weights(labels[itr], st.groups[itr])
        m = np.isin(owner, itr)
        reps = np.maximum(1, np.round(w[owner[m]])).astype(int)
        sel = torch.from_numpy(np.repeat(np.arange(int(m.sum())), reps))
        train = (train[0][sel], train[1][sel])
    torch.manual_seed(seed)
    model = build_model(list(classes), train[0].mean(0).numpy(), train[0].std(0).numpy() + 1e-6, s)
    fit(model, train, val, s, log=log)
    model.eval()
    m = np.isin(owner, te)
    with torch.no_grad():
        P = model(torch.from_numpy(X[m]).float()).logits.softmax(-1).numpy()
    pos = {r: j for j, r in enumerate(te)}
    idx = np.array([pos[v] for v in owner[m]])
    out = np.zeros((len(te), len(classes)))
    np.add.at(out, idx, P)
    return out / np.bincount(idx, minlength=len(te))[:, None], classes


def cmd_moe(args):
    st = Store()
    g, allidx, known = idx_gtzan(st), np.arange(len(st.recs)), idx_emotify_known(st)
    out = Path(args.out)
    variants = args.variants or list(MOE_VARIANTS)
    for name in variants:
        rep, flags = MOE_VARIANTS[name]
        for proto in args.protocols:
            t0 = time.time()
            if proto == "P2":
                Ps = []
                for seed in args.seeds:
                    P, classes = moe_song_probs(st, rep, g, known, st.genre, flags, seed)
                    Ps.append(P)
                per = [int((classes[P.argmax(1)] == st.genre[known]).sum()) for P in Ps]
                ens = classes[np.mean(Ps, 0).argmax(1)]
                r = result(classes[Ps[0].argmax(1)], st.genre[known], {"per_seed_correct": per, "per_seed_n": len(known),
                           "ensemble_of_seeds": result(ens, st.genre[known])})
            else:
                def moe_predict(tr, te, seed):
                    P, classes = moe_song_probs(st, rep, tr, te, st.genre, flags, seed)
                    return classes[P.argmax(1)]

                r = protocol_result(st, proto, args.seeds, g, allidx, known, moe_predict)
            r.update(variant=name, rep=rep, flags=flags, protocol=proto, seconds=round(time.time() - t0),
                     command=f"generalisation_study.py moe --variants {name} --protocols {proto} --seeds "
                             + " ".join(map(str, args.seeds)))
            print(f"MoE {proto} {name:22s} {r['acc']:.3f} {r['ci']} {r['k']}/{r['n']} per-seed {r['per_seed_correct']} "
                  + (f"ens {r['ensemble_of_seeds']['acc']:.3f} " if proto == "P2" else "")
                  + (f"gtzan {r['acc_gtzan']['acc']:.3f} emotify {r['acc_emotify']['acc']:.3f} " if proto == "P3" else "")
                  + f"{r['seconds']}s", flush=True)
            with open(out, "a") as f:
                f.write(json.dumps(r, default=float) + "\n")



# --------------------------------------------------------------------------------------------
# 8. report: markdown tables from the JSON-lines files
# --------------------------------------------------------------------------------------------


def _row_ci(d):
    """Accuracy as the mean over repeats, with a Wilson interval on one repeat's n (not the pooled n,
    which would count each recording once per repeat)."""
    per, n = d["per_seed_correct"], d["per_seed_n"]
    k = float(np.mean(per))
    lo, hi = af.wilson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]", "/".join(str(v) for v in per) + f" of {n}"


def cmd_report(args):
    rows = []
    for name in ("lr_1", "lr_2", "lr_3", "ncm", "lda", "moe"):
        f = CACHE / f"{name}.jsonl"
        if f.is_file():
            rows += [dict(json.loads(l), source=name) for l in f.read_text().splitlines() if l.strip()]
    for proto in ("P1", "P2", "P3"):
        print(f"\n### {proto}\n\n| method | inputs | examples | weighting | accuracy [95% CI] | correct per repeat | extra |\n"
              "| --- | --- | --- | --- | --- | --- | --- |")
        sel = [r for r in rows if r["protocol"] == proto]
        sel.sort(key=lambda r: -np.mean(r["per_seed_correct"]))
        for r in sel:
            acc, cnt = _row_ci(r)
            if r["source"].startswith("lr"):
                meth = f"LR (C inner-CV: {','.join(sorted({f'{c:g}' for c in r['C_chosen']}))})"
                ex, w = r["level"], r["weighting"]
            elif r["source"] == "lda":
                meth, ex, w = "shrinkage LDA (z-scored song means)", "song mean", r["weighting"]
            elif r["source"] == "ncm":
                meth = f"NCM {r['metric']}{' z-scored' if r['zscore'] else ' raw'}"
                ex, w = "song mean", r["weighting"]
            else:
                meth = f"MoE {r['variant']}"
                ex, w = "window", "none"
            extra = ""
            if proto == "P3":
                extra = f"gtzan {r['acc_gtzan']['acc']:.3f}, emotify {r['acc_emotify']['acc']:.3f}"
            if "ensemble_of_seeds" in r:
                extra = f"ensemble of {len(r['per_seed_correct'])} seeds {r['ensemble_of_seeds']['k']}/{r['ensemble_of_seeds']['n']}"
            print(f"| {meth} | {r['rep']} | {ex} | {w} | {acc} | {cnt} | {extra} |")



def lda_fit_predict(st, rep, weighting, tr, te, labels):
    """Shrinkage LDA (Ledoit-Wolf) on z-scored song vectors, equal priors; 'artist': trained on one
    mean vector per (artist, genre) instead of one per song."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, owner = st.x(rep, "window")
    m = np.isin(owner, tr)
    mu, sd = X[m].mean(0), X[m].std(0) + 1e-6
    Vtr = song_vectors(st, rep, tr, False, mu, sd)
    Vte = song_vectors(st, rep, te, False, mu, sd)
    ytr = labels[tr]
    if weighting == "artist":
        keys = sorted({(a, y) for a, y in zip(st.groups[tr], ytr)})
        Vtr = np.array([Vtr[(st.groups[tr] == a) & (ytr == y)].mean(0) for a, y in keys])
        ytr = np.array([y for _, y in keys])
    classes = np.unique(ytr)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(len(classes), 1 / len(classes)))
    return lda.fit(Vtr, ytr).predict(Vte)


def cmd_lda(args):
    st = Store()
    g, allidx, known = idx_gtzan(st), np.arange(len(st.recs)), idx_emotify_known(st)
    out = Path(args.out)
    for rep in ["pen", "tags", "pen+tags", "hc+pen", "hc+pen+tags"]:
        for weighting in ("none", "artist"):
            for proto in args.protocols:
                r = protocol_result(st, proto, args.seeds, g, allidx, known,
                                    lambda tr, te, _seed: lda_fit_predict(st, rep, weighting, tr, te, st.genre))
                r.update(rep=rep, weighting=weighting, protocol=proto,
                         command=f"generalisation_study.py lda --protocols {proto} --seeds " + " ".join(map(str, args.seeds)))
                print(f"LDA {proto} {rep:12s} {weighting:7s} {r['acc']:.3f} {r['k']}/{r['n']} per-seed {r['per_seed_correct']}"
                      + (f" gtzan {r['acc_gtzan']['acc']:.3f} emotify {r['acc_emotify']['acc']:.3f}" if proto == "P3" else ""),
                      flush=True)
                with open(out, "a") as f:
                    f.write(json.dumps(r, default=float) + "\n")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "cache":
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--shard", default="0/1")
    cmd_cache(p.parse_args())
    sys.exit(0)

if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["report", "lr", "ncm", "lda", "zeroshot", "novelty", "fewshot", "moe"])
    p.add_argument("--stage", default="1")
    p.add_argument("--protocols", nargs="+", default=["P1", "P2", "P3"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rep", default="pen+tags")
    p.add_argument("--out", default=None)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=None)
    a = p.parse_args()
    a.out = a.out or str(CACHE / f"{a.cmd}{'_' + a.stage if a.cmd == 'lr' else ''}.jsonl")
    {"lr": cmd_lr, "zeroshot": lambda a: print(json.dumps(zero_shot(Store()), default=float, indent=1)),
     "novelty": lambda a: cmd_novelty(a), "fewshot": lambda a: cmd_fewshot(a), "moe": lambda a: cmd_moe(a), "ncm": lambda a: cmd_ncm(a), "report": lambda a: cmd_report(a), "lda": lambda a: cmd_lda(a)}[a.cmd](a)
