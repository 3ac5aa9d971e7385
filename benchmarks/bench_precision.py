"""Speed and accuracy of the musicnn network in each precision and layout, against fp32, in one run.

Inputs are the 40 log-mel patches of ``../shared/reference/musicnn-msd-reference.npz`` (what the
original TensorFlow musicnn computes on them is in the same file; synthetic patches if it is
absent). For each thread count (``--threads``, default 1 and 2) and batch size (``--batch``,
patches per forward pass) every variant embeds all the patches; the variants are interleaved
within each repeat, so machine load hits them alike, and the figure kept is wall ms per patch
(min and median over ``--repeats``). Variants:

* ``fp32``: ``MusiCNN.embed`` as shipped (the reference for every ratio);
* ``fp32 channels-last``: the same network with ``torch.channels_last`` weights and activations;
* ``bf16 autocast``: fp32 network under ``torch.autocast("cpu", torch.bfloat16)`` (oneDNN);
* ``bf16`` / ``int8``: ``MusiCNN.embed(precision=...)``: the front-end convolutions as matrix
  products in bfloat16, or int8 (timbral) + bfloat16 (temporal);
* ``torch.compile`` (``--compile``; inductor, fp32), ``ONNX Runtime fp32`` and ``ONNX Runtime int8
  QDQ`` (static, per-channel, calibrated on half the patches) when ``onnxruntime`` (and ``onnx``
  for the quantiser) are installed; each says why when skipped.

Accuracy, per variant: the per-patch cosine of its 200-d embedding to fp32's (min and mean), the
largest tag-logit difference to fp32, and the largest embedding and logit differences to
TensorFlow's answers.

``--recordings DIR`` (a folder of genre sub-folders, e.g. ``../shared/data/gtzan-mini-dev``) adds
what the song path sees: every recording cut into ``--clip-seconds`` windows
(``features.extract_song``), each window's patches cut as the song path cuts them
(``song.song_patches``) and embedded in fp32, bf16 and int8 (``frontend.patch_embeddings``); per-window cosine to fp32, and a genre classifier (logistic
regression on the fp32 window embeddings, 5-fold cross-validated with folds by artist:
``artist_folds``, the dev indexes; a recording they do not know is a group of its own) whose
held-out recordings are then predicted from each precision's embeddings: the share of recordings
given the same genre as from fp32, and each precision's cross-validated accuracy.

Usage::

    python benchmarks/bench_precision.py                       # 1 and 2 threads, batches 1,2,4,8,16
    python benchmarks/bench_precision.py --threads 1 --batch 2,4 --repeats 5 --compile --json out.json
    python benchmarks/bench_precision.py --threads 1 --batch 2 --repeats 1 --recordings ../shared/data/gtzan-mini-dev
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import frontend  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "musicnn-msd-reference.npz"


def load_patches():
    """(patches (N, 187, 96) float32, reference dict or None, description)."""
    if REFERENCE.is_file():
        ref = np.load(REFERENCE)
        return np.ascontiguousarray(ref["patches"]), {k: ref[k] for k in ("logits", "penultimate")}, str(REFERENCE)
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 3, (40, frontend.PATCH_FRAMES, frontend.MUSICNN_N_MELS)).astype(np.float32), None,
            "synthetic patches (reference file not found)")


class _Embed(torch.nn.Module):
    """net.embed as a module, for export."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.embed(x, "fp32")


def onnx_sessions(net, patches, threads, tmp):
    """{name: callable or skip reason} for ONNX Runtime fp32 and int8 QDQ."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"ONNX Runtime fp32": "skipped: onnxruntime not installed",
                "ONNX Runtime int8 QDQ": "skipped: onnxruntime not installed"}
    path = Path(tmp) / "musicnn.onnx"
    if not path.is_file():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Embed(net), torch.from_numpy(patches[:2]), str(path), input_names=["x"],
                              output_names=["emb"], dynamic_axes={"x": {0: "b"}, "emb": {0: "b"}},
                              dynamo=False, opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    out = {}
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out["ONNX Runtime fp32"] = lambda x: torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    qpath = Path(tmp) / "musicnn_int8.onnx"
    try:
        if not qpath.is_file():
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            calib = patches[::2]

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.it = iter([{"x": calib[i:i + 2]} for i in range(0, len(calib), 2)])

                def get_next(self):
                    return next(self.it, None)

            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(path), str(pre))
            quantize_static(str(pre), str(qpath), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        qsess = ort.InferenceSession(str(qpath), opts, providers=["CPUExecutionProvider"])
        out["ONNX Runtime int8 QDQ"] = lambda x: torch.from_numpy(qsess.run(None, {"x": x.numpy()})[0])
    except ImportError as exc:
        out["ONNX Runtime int8 QDQ"] = f"skipped: {exc}"
    return out


def variants(net, patches, threads, tmp, use_compile):
    """{name: embed callable (B, 187, 96) tensor -> (B, 200) float32, or a skip reason}."""
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def autocast(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net.embed(x, "fp32").float()

    out = {"fp32": lambda x: net.embed(x, "fp32"),
           "fp32 channels-last": lambda x: cl.embed(x, "fp32"),
           "bf16 autocast (oneDNN)": autocast,
           "bf16 (embed precision='bf16')": lambda x: net.embed(x, "bf16"),
           "int8 (embed precision='int8')": lambda x: net.embed(x, "int8")}
    if use_compile:
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(lambda x: net.embed(x, "fp32"), dynamic=True)
            with torch.inference_mode():
                compiled(torch.from_numpy(patches[:2]))
            print(f"torch.compile: first call {time.perf_counter() - t0:.1f} s", flush=True)
            out["torch.compile fp32 (inductor)"] = compiled
        except Exception as exc:  # noqa: BLE001 - report, do not fail the benchmark
            out["torch.compile fp32 (inductor)"] = f"skipped: {type(exc).__name__}: {str(exc)[:120]}"
    out.update(onnx_sessions(net, patches, threads, tmp))
    return out


def accuracy(net, emb, base, ref):
    """Cosine to fp32 (min, mean), max |logit - fp32 logit|, max diffs to TensorFlow's answers."""
    cos = F.cosine_similarity(emb, base, dim=1)
    with torch.inference_mode():
        logits, base_logits = net.tags(emb), net.tags(base)
    row = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
           "logit_maxdiff_fp32": float((logits - base_logits).abs().max())}
    if ref is not None:
        row["emb_maxdiff_tf"] = float(np.abs(emb.numpy() - ref["penultimate"]).max())
        row["logit_maxdiff_tf"] = float(np.abs(logits.numpy() - ref["logits"]).max())
    return row


def artist_groups(files):
    """Each file's artist group (`artist_folds`: gtzan-artists.csv, emotify-dev/artists.csv); a file
    the indexes do not know is a group of its own."""
    import artist_folds

    known = {}
    if (artist_folds.DATA / "gtzan-artists.csv").is_file():
        known = {r.path.resolve(): artist_folds.group_key(r.artist, r.rel) for r in artist_folds.load_recordings()}
    return np.array([known.get(Path(f).resolve(), artist_folds.group_key("", str(f))) for f in files], dtype=object)


def recording_agreement(net, folder, clip_seconds, precisions=("bf16", "int8")):
    """Per-window cosine to fp32 and genre agreement over the recordings of `folder`'s genre sub-folders."""
    import features
    from sklearn.linear_model import LogisticRegression

    import artist_folds
    from song import song_patches

    files = sorted(f for d in sorted(Path(folder).iterdir()) if d.is_dir() for f in d.iterdir() if f.is_file())
    labels, embs = [], {p: [] for p in ("fp32",) + tuple(precisions)}
    for f in files:
        y = features.load_audio(f, sr=features.SAMPLE_RATE)
        song = features.extract_song(y, features.SAMPLE_RATE, clip_seconds)
        patches = song_patches(y, features.SAMPLE_RATE, song.starts, clip_seconds)  # the song path's patches
        for p in embs:
            embs[p].append(frontend.patch_embeddings(net, patches, precision=p))
        labels.append(f.parent.name)
    labels = np.array(labels)
    out = {"recordings": len(files), "windows": int(sum(len(e) for e in embs["fp32"]))}
    ref = np.concatenate(embs["fp32"])
    for p in precisions:
        cos = F.cosine_similarity(torch.from_numpy(np.concatenate(embs[p])), torch.from_numpy(ref), dim=1)
        out[f"{p}_window_cos_min"], out[f"{p}_window_cos_mean"] = float(cos.min()), float(cos.mean())
    pred = {p: np.empty(len(files), dtype=object) for p in embs}
    for train, test in artist_folds.artist_kfold(labels, artist_groups(files), k=5, seed=0):
        x = np.concatenate([embs["fp32"][i] for i in train])
        yl = np.concatenate([[labels[i]] * len(embs["fp32"][i]) for i in train])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        clf = LogisticRegression(max_iter=2000, C=0.5).fit((x - mu) / sd, yl)
        for p in embs:
            for i in test:
                prob = clf.predict_proba((embs[p][i] - mu) / sd).mean(0)
                pred[p][i] = clf.classes_[int(np.argmax(prob))]
    for p in embs:
        out[f"{p}_cv_accuracy"] = float(np.mean(pred[p] == labels))
        out[f"{p}_same_genre_as_fp32"] = float(np.mean(pred[p] == pred["fp32"]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="torch thread counts (default 1,2)")
    ap.add_argument("--batch", default="1,2,4,8,16", help="patches per forward pass (default 1,2,4,8,16)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant and batch (default 3)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for minutes)")
    ap.add_argument("--json", default=None, help="write every figure to this file")
    ap.add_argument("--recordings", default=None, help="a folder of genre sub-folders: per-window cosine and "
                                                        "genre agreement on its recordings")
    ap.add_argument("--clip-seconds", type=float, default=5.0, help="window length for --recordings (default 5)")
    args = ap.parse_args(argv)

    patches, ref, source = load_patches()
    x_all = torch.from_numpy(patches)
    n = len(patches)
    net = frontend.load_musicnn()
    batches = [int(b) for b in args.batch.split(",")]
    print(f"{n} patches from {source}; torch {torch.__version__}; auto precision here: "
          f"{frontend.resolve_precision('auto')}; wall ms per patch, min / median of {args.repeats}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            vs = variants(net, patches, threads, tmp, args.compile)
            runnable = {k: v for k, v in vs.items() if callable(v)}
            times = {(k, b): [] for k in runnable for b in batches}
            with torch.inference_mode():
                base = torch.cat([net.embed(x_all[i:i + 2], "fp32") for i in range(0, n, 2)])
                acc = {k: accuracy(net, torch.cat([f(x_all[i:i + 2]) for i in range(0, n, 2)]).float(), base, ref)
                       for k, f in runnable.items()}
                for _ in range(args.repeats):
                    for b in batches:
                        for k, f in runnable.items():  # interleaved: every variant sees the same load
                            t0 = time.perf_counter()
                            for i in range(0, n, b):
                                f(x_all[i:i + b])
                            times[(k, b)].append(1000 * (time.perf_counter() - t0) / n)
            fp32_best = min(statistics.median(times[("fp32", b)]) for b in batches)
            print(f"\n{threads} thread(s):")
            print("| variant | best batch | ms/patch min | ms/patch median | speed vs fp32 (best batch each) | "
                  "cosine to fp32 min / mean | max logit diff to fp32 | max emb / logit diff to TF |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for k, v in vs.items():
                if not callable(v):
                    print(f"| {k} | {v} | | | | | | |")
                    continue
                med = {b: statistics.median(times[(k, b)]) for b in batches}
                best = min(med, key=med.get)
                a = acc[k]
                tf = f"{a['emb_maxdiff_tf']:.2e} / {a['logit_maxdiff_tf']:.2e}" if ref is not None else "-"
                print(f"| {k} | {best} | {min(times[(k, best)]):.1f} | {med[best]:.1f} | {fp32_best / med[best]:.2f}x | "
                      f"{a['cos_min']:.6f} / {a['cos_mean']:.6f} | {a['logit_maxdiff_fp32']:.2e} | {tf} |")
                results.append({"variant": k, "threads": threads, "ms_per_patch_median": med,
                                "ms_per_patch_min": {b: min(times[(k, b)]) for b in batches}, "best_batch": best,
                                "speed_vs_fp32": fp32_best / med[best], **a})
            print("per batch, median ms/patch: " + "; ".join(
                f"{k}: " + ", ".join(f"{b}={statistics.median(times[(k, b)]):.1f}" for b in batches) for k in runnable))
    if args.recordings:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        agree = recording_agreement(net, args.recordings, args.clip_seconds)
        print(f"\nrecordings of {args.recordings} ({agree['recordings']} recordings, {agree['windows']} "
              f"{args.clip_seconds:g}-s windows):")
        for p in ("bf16", "int8"):
            print(f"  {p}: per-window cosine to fp32 min {agree[p + '_window_cos_min']:.6f} mean "
                  f"{agree[p + '_window_cos_mean']:.6f}; same genre as fp32 on "
                  f"{100 * agree[p + '_same_genre_as_fp32']:.1f}% of recordings; 5-fold-by-artist accuracy "
                  f"{agree[p + '_cv_accuracy']:.3f} (fp32 {agree['fp32_cv_accuracy']:.3f})")
        results.append({"recordings": args.recordings, **agree})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
