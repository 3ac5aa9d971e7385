"""CPU cost per 30-s song of the whole prediction path, against a DistilHuBERT-size encoder.

What is timed, in one process, with one thread everywhere (``torch.set_num_threads(1)``,
threadpoolctl's ``threadpool_limits(1)`` and OMP/MKL/OpenBLAS set to 1 before numpy and torch
start):

* ``model.predict_audio(path)`` on a 30-s recording: decoding the file, resampling to 22,050 Hz,
  the 59 window features, (with ``frontend="musicnn"``) 16 kHz log-mel patches and the musicnn
  network, then the MoE, for ``frontend="none"`` and ``frontend="musicnn"`` (and, with
  ``--clip-seconds``, each window length given); the musicnn path twice, interleaved: with the
  front end in the precision ``"auto"`` picks on this CPU (``frontend.resolve_precision``: int8 on
  AVX-512 VNNI + BF16) and forced to exact fp32 (``config.frontend_precision="fp32"``, and the CPU
  flags hidden from ``frontend.cpu_flags`` for as long as the song path does not read the config);
* the reference: a ``transformers`` ``HubertModel`` of DistilHuBERT's size (2 transformer layers,
  hidden 768, 12 heads, feed-forward 3072, HuBERT's convolutional waveform encoder) built locally
  from a ``HubertConfig`` with random weights (no download), forward pass under ``torch.no_grad``
  on 30 s of 16 kHz audio (the same recording, decoded and resampled beforehand: the reference
  is charged for its network only, which favours it).

Beside the times, the floating-point operations of the two networks are counted
(``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products, which are nearly
all of both): musicnn on the song's patches at each window length, the encoder on the 30 s. The
count does not depend on the machine or its load, and it bounds what any faster implementation of
the same computation can reach.

Figures are process CPU seconds (``time.process_time``: what the process spends on its cores, far
less sensitive to other jobs on a shared machine than wall time; wall seconds are printed beside
it), the median over ``--repeats`` runs after one warm-up run. The models' weights do not change
their cost: fresh models with the default architecture are used unless ``--model`` names a
trained one (a ``save_pretrained`` folder or run folder).

Usage::

    python benchmarks/bench_cost.py                       # a GTZAN mini-dev clip if present
    python benchmarks/bench_cost.py --audio song.wav --repeats 7 --clip-seconds 3,5,6

The target (issue 22): the musicnn path at most 1/20 of the encoder's CPU time.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
import frontend  # noqa: E402
from configuration import MusicGenreMoEConfig  # noqa: E402
from modeling import MusicGenreMoE  # noqa: E402

GTZAN = ROOT.parent / "shared" / "data" / "gtzan-mini-dev"
GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
SECONDS = 30.0


def default_audio(tmp):
    """A 30-s recording: the first GTZAN mini-dev clip if present, else a synthetic clip written as WAV."""
    if GTZAN.is_dir():
        found = sorted(GTZAN.glob("*/*.wav"))
        if found:
            return found[0], "GTZAN mini-dev clip"
    import soundfile as sf
    from workbench import synth

    y = synth.generate_clip("jazz", np.random.default_rng(0), duration=SECONDS)
    path = Path(tmp) / "synthetic_jazz_30s.wav"
    sf.write(path, y, features.SAMPLE_RATE)
    return path, "synthetic 30-s clip (no GTZAN folder found)"


TARGET = 1 / 20


def fresh_model(frontend_name, clip_seconds, precision="auto"):
    """A default-architecture MoE for 10 genres (weights do not change the cost); musicnn pretrained."""
    cfg = MusicGenreMoEConfig(id2label=dict(enumerate(GENRES)), label2id={g: i for i, g in enumerate(GENRES)},
                              frontend=frontend_name, clip_seconds=clip_seconds, frontend_precision=precision)
    cfg.feature_mean, cfg.feature_std = [0.0] * cfg.input_size, [1.0] * cfg.input_size
    model = MusicGenreMoE(cfg)
    if frontend_name != "none":
        model.load_pretrained_frontend()
    return model.eval()


@contextlib.contextmanager
def precision_of(model):
    """Run `model` with its configured front-end precision: for "fp32", the CPU's flags are also
    hidden from `frontend.resolve_precision`, so "auto" anywhere in the song path resolves to fp32."""
    if getattr(model.config, "frontend_precision", "auto") != "fp32":
        yield
        return
    saved = frontend.cpu_flags
    frontend.cpu_flags = lambda: frozenset()
    try:
        yield
    finally:
        frontend.cpu_flags = saved


def load_trained(path):
    path = Path(path)
    if (path / "hf_model").is_dir():
        path = path / "hf_model"
    return MusicGenreMoE.from_pretrained(path).eval()


def hubert_reference():
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(num_hidden_layers=2, hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    torch.manual_seed(0)
    return HubertModel(cfg).eval()


def counted_flops(fn):
    """Floating-point operations (multiply and add counted apart) of the torch ops in fn()."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def musicnn_flops(model, y):
    """FLOPs of the musicnn network on the patches `model.predict_audio` gives it for audio `y`
    (counted on the fp32 network: the int8 and bf16 paths do the same multiply-adds)."""
    song = features.extract_song(y, features.SAMPLE_RATE, model.config.clip_seconds)
    return counted_flops(lambda: frontend.window_embeddings(model.frontend, song.audio, features.SAMPLE_RATE,
                                                            precision="fp32"))


def timed(fn, repeats):
    """(median CPU s, median wall s, all CPU s) of fn() over `repeats` runs after one warm-up run."""
    return timed_together({"": fn}, repeats)[""]


def timed_together(fns, repeats):
    """{name: (median CPU s, median wall s, all CPU s)}, the functions interleaved within each repeat
    (so load on a shared machine hits them alike), after one warm-up run each."""
    for fn in fns.values():
        fn()
    cpu, wall = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return {k: (statistics.median(cpu[k]), statistics.median(wall[k]), cpu[k]) for k in fns}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audio", default=None, help="a 30-s recording (default: a GTZAN mini-dev clip, else synthetic)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per path after one warm-up (default 5)")
    ap.add_argument("--clip-seconds", default="5", help="window lengths for the musicnn path, comma-separated "
                                                        "(default 5, the config default)")
    ap.add_argument("--model", action="append", default=[], help="also time a trained model folder (repeatable)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path, source = (Path(args.audio), "given") if args.audio else default_audio(tmp)
        y = features.load_audio(path, sr=features.SAMPLE_RATE)
        seconds = len(y) / features.SAMPLE_RATE
        print(f"audio: {path} ({source}, {seconds:.1f} s); torch threads {torch.get_num_threads()}; "
              f"median of {args.repeats} runs after a warm-up; CPU = time.process_time")

        auto = frontend.resolve_precision("auto")
        print(f"front-end precision 'auto' resolves to {auto!r} here")
        paths = {"MoE, frontend=none (decode + features + MoE)": fresh_model("none", 5.0)}
        for c in (float(v) for v in args.clip_seconds.split(",")):
            for precision, label in (("fp32", "fp32"), ("auto", f"auto = {auto}")):
                paths[f"MoE, frontend=musicnn {label}, {c:g}-s windows (decode + features + musicnn + MoE)"] = \
                    fresh_model("musicnn", c, precision)
        for m in args.model:
            paths[f"trained model {m}"] = load_trained(m)

        def run(model):
            with precision_of(model):
                model.predict_audio(str(path))

        times = timed_together({name: (lambda model=model: run(model)) for name, model in paths.items()}, args.repeats)
        rows = {}
        for name, model in paths.items():
            cpu, wall, all_cpu = times[name]
            rows[name] = {"cpu_s": cpu, "wall_s": wall, "cpu_runs": all_cpu,
                          "frontend_precision": getattr(model.config, "frontend_precision", None),
                          "network_gflop": musicnn_flops(model, y) / 1e9 if model.frontend is not None else 0.0}
            print(f"  {name}: {cpu:.3f} CPU s ({wall:.3f} wall s); musicnn network "
                  f"{rows[name]['network_gflop']:.1f} GFLOP", flush=True)

        y16 = features.resample_audio(y, features.SAMPLE_RATE, 16000)[: int(SECONDS * 16000)]
        x16 = torch.from_numpy(np.ascontiguousarray(y16, dtype=np.float32))[None]
        hubert = hubert_reference()
        n_params = sum(p.numel() for p in hubert.parameters())
        ref_cpu, ref_wall, ref_all = timed(lambda: hubert(x16), args.repeats)
        ref_gflop = counted_flops(lambda: hubert(x16)) / 1e9
        ref_name = f"HubertModel, DistilHuBERT size, random weights ({n_params / 1e6:.1f} M parameters), 30 s at 16 kHz"
        print(f"  {ref_name}: {ref_cpu:.3f} CPU s ({ref_wall:.3f} wall s); {ref_gflop:.1f} GFLOP")

    print("\n| path | CPU s per 30-s song | wall s | ratio to the encoder | network GFLOP | FLOP ratio |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        r["ratio"] = r["cpu_s"] / ref_cpu
        r["flop_ratio"] = r["network_gflop"] / ref_gflop
        flop_ratio = f"1/{1 / r['flop_ratio']:.1f}" if r["flop_ratio"] else "-"
        print(f"| {name} | {r['cpu_s']:.3f} | {r['wall_s']:.3f} | {r['ratio']:.3f} (1/{1 / r['ratio']:.1f}) | "
              f"{r['network_gflop']:.1f} | {flop_ratio} |")
    print(f"| {ref_name} | {ref_cpu:.3f} | {ref_wall:.3f} | 1 | {ref_gflop:.1f} | 1 |")
    for name, r in rows.items():
        verdict = "met" if r["ratio"] <= TARGET else "MISSED"
        print(f"target <= 1/{1 / TARGET:.0f} of the encoder: {verdict} for {name} ({r['ratio']:.3f} = 1/{1 / r['ratio']:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"audio": str(path), "repeats": args.repeats, "paths": rows,
                                               "reference": {"name": ref_name, "cpu_s": ref_cpu, "wall_s": ref_wall, "gflop": ref_gflop,
                                                             "cpu_runs": ref_all}}, indent=2))
    return rows


if __name__ == "__main__":
    main()
