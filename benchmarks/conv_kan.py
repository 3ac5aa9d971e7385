"""The second seed's proposal, measured: a convolutional KAN on mel-spectrograms trained with
Prototypical Networks, beside a CNN of the same shape and the pretrained musicnn front end.

Usage::

    python benchmarks/conv_kan.py ../shared/data/gtzan-mini-dev            # held-out direction
    python benchmarks/conv_kan.py ../shared/data/gtzan-mini-dev --swap     # development direction
    python benchmarks/conv_kan.py ../shared/data/gtzan-mini-dev --quick    # smoke run

Protocol
--------
* Input: musicnn's own log-mel patches (`frontend.log_mel`: 16 kHz, 96 mel bands, 187 frames, ~3 s).
  Each evaluation row is a 5-s window of `benchmarks/fewshot_eval.py` (the same rows, labels,
  recordings and episodes: ``fewshot_eval.draw_episodes``); its patch is the window's first
  (only) musicnn patch, exactly what the musicnn embedding of that row saw.
* Training, from scratch, on the train genres' recordings only (default blues, classical, jazz,
  pop, rock): ``--steps`` Adam steps, each on an episode-shaped batch (``--batch-way`` genres x
  ``--batch-shot`` random 187-frame crops of the genre's whole recordings) with the prototypical
  loss ``fewshot.batch_prototypical_loss`` (leave-one-out prototypes, squared Euclidean). No
  early stopping and nothing chosen on the test genres; the settings below were fixed before
  any run and not tuned.
* The two networks have the same layers, ``ConvEmbedder(kind)``: input scaled with the train
  patches' mean/std, 2x2 average pooling (93 x 48), then per block a 3x3 convolution (padding 1)
  -> [ReLU] -> BatchNorm -> 2x2 max pooling, for ``--channels`` (8, 16, 32), then mean and max
  over time and frequency (64 values) -> LayerNorm -> a linear map to the ``--embedding``
  (32-d) embedding. ``cnn``: `nn.Conv2d` + ReLU and `nn.Linear`. ``kan``: every convolution is an
  unfold + `kan.KANLinear` (``KANConv2d``: a learnable B-spline on every input-output edge of the
  3x3 neighbourhood; no ReLU, the edges are the nonlinearity) and the head is a `KANLinear`.
* Scoring: 5-way K-shot prototypes (squared Euclidean) of each network's embeddings on the
  test genres, ``--seeds`` networks per kind (an episode's accuracy is the mean over seeds),
  beside raw z-scored feature prototypes and the musicnn space (`fewshot_eval.MUSICNN_PRIMARY`),
  on the same episodes. Intervals as in `fewshot_eval.py` (recording CI is the one to read).
* Step time: one training step (forward, prototypical loss, backward, Adam) on the same batch,
  CNN and KAN alternated in the same run (``--timing-rounds`` rounds of ``--timing-steps``
  steps each, median per step), one torch thread; the ratio is KAN / CNN.

Result on gtzan-mini-dev (``--episodes 300 --steps 200 --seeds 1``, held-out direction, run once):
5-way 1 / 5 shots, conv KAN (71,248 parameters) 0.351 / 0.424, CNN (8,208) 0.366 / 0.463,
musicnn 0.686 / 0.804, raw feature prototypes 0.617 / 0.787; step time 368 ms against 36 ms
(10.2x). Trained from scratch on 25 recordings both networks overfit the training genres; the KAN
is no better than the CNN and 10x slower, so it is not an option in the model.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workbench import fewshot  # noqa: E402
import fewshot_eval  # noqa: E402
from features import CLIP_SECONDS, SAMPLE_RATE, load_audio, resample_audio, split_windows  # noqa: E402
from frontend import MUSICNN_SAMPLE_RATE, PATCH_FRAMES, PATCH_SAMPLES, log_mel, window_patches  # noqa: E402
from kan import KANLinear  # noqa: E402

KINDS = ("cnn", "kan")


# -- the networks -----------------------------------------------------------------------------------


class KANConv2d(nn.Module):
    """A 2-D convolution whose weights are KAN edges: unfold the k x k neighbourhoods, `KANLinear` them.

    Same output shape as ``nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)``
    (stride 1).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, **kan_kwargs):
        super().__init__()
        self.kernel_size, self.out_channels = kernel_size, out_channels
        self.kan = KANLinear(in_channels * kernel_size * kernel_size, out_channels, **kan_kwargs)

    def forward(self, x):
        b, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, padding=self.kernel_size // 2)  # (B, C*k*k, H*W)
        out = self.kan(cols.transpose(1, 2))  # (B, H*W, out)
        return out.transpose(1, 2).reshape(b, self.out_channels, h, w)


class ConvEmbedder(nn.Module):
    """Patch (B, 187, 96) log-mel -> (B, embedding) embedding; ``kind`` "cnn" or "kan" (see the docstring)."""

    def __init__(self, kind="cnn", channels=(8, 16, 32), embedding=32, input_mean=0.0, input_std=1.0,
                 grid_size=5, spline_order=3, input_pool=4):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.register_buffer("input_mean", torch.tensor(float(input_mean)))
        self.register_buffer("input_std", torch.tensor(float(input_std)))
        kan_kwargs = {"grid_size": grid_size, "spline_order": spline_order}
        blocks, c_in = [], 1
        for c in channels:
            if kind == "cnn":
                blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            else:
                blocks += [KANConv2d(c_in, c, 3, **kan_kwargs)]
            blocks += [nn.BatchNorm2d(c), nn.MaxPool2d(2)]
            c_in = c
        self.blocks = nn.Sequential(nn.AvgPool2d(input_pool), *blocks)
        self.norm = nn.LayerNorm(2 * c_in)
        self.head = nn.Linear(2 * c_in, embedding) if kind == "cnn" else KANLinear(2 * c_in, embedding, **kan_kwargs)

    def forward(self, patches):
        x = ((patches - self.input_mean) / self.input_std).unsqueeze(1)  # (B, 1, 187, 96)
        x = self.blocks(x)
        x = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        return self.head(self.norm(x))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# -- data -------------------------------------------------------------------------------------------


def window_audio(y, starts, sr=SAMPLE_RATE, clip_seconds=CLIP_SECONDS):
    """The windows of `y` that `features.extract_song` kept (identified by their `starts`)."""
    windows = split_windows(y, sr, clip_seconds)
    win = int(round(clip_seconds * sr))
    starts_all = [i * win for i in range(len(windows))]
    if len(windows) > max(len(y) // win, 1):
        starts_all[-1] = len(y) - win
    by_start = dict(zip(starts_all, windows))
    return [by_start[int(s)] for s in starts]


def row_patches(names, starts):
    """(n_rows, 187, 96): the first musicnn patch of every window row (5-s windows have exactly one)."""
    out = []
    for path, st in zip(names, starts):
        y = load_audio(path)
        out += [window_patches(w, SAMPLE_RATE)[0] for w in window_audio(y, st)]
    return np.stack(out).astype(np.float32)


def recording_log_mels(names):
    """Whole-recording 16-kHz log-mel (n_frames, 96) per recording, repeat-padded to one patch."""
    out = []
    for path in names:
        y = resample_audio(load_audio(path), SAMPLE_RATE, MUSICNN_SAMPLE_RATE)
        if y.size < PATCH_SAMPLES:
            y = np.tile(y, -(-PATCH_SAMPLES // y.size))[:PATCH_SAMPLES]
        out.append(log_mel(y))
    return out


def sample_batch(rng, mels, mel_labels, n_way, n_shot):
    """n_way genres x n_shot random 187-frame crops of random recordings of each: (patches, labels)."""
    genres = rng.choice(np.unique(mel_labels), n_way, replace=False)
    patches, labels = [], []
    for i, g in enumerate(genres):
        recs = np.flatnonzero(mel_labels == g)
        for r in rng.choice(recs, n_shot):
            m = mels[r]
            s = rng.integers(0, len(m) - PATCH_FRAMES + 1)
            patches.append(m[s:s + PATCH_FRAMES])
            labels.append(i)
    return torch.from_numpy(np.stack(patches)), torch.tensor(labels)


def train_embedder(kind, mels, mel_labels, a, seed, stats, log=print):
    """A `ConvEmbedder` trained from scratch with the prototypical loss on the train genres' recordings."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ConvEmbedder(kind, a.channels, a.embedding, *stats)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    model.train()
    t0, losses = time.perf_counter(), []
    for step in range(a.steps):
        x, y = sample_batch(rng, mels, mel_labels, a.batch_way, a.batch_shot)
        loss = fewshot.batch_prototypical_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, a.steps // 5) == 0:
            log(f"    {kind} seed {seed} step {step + 1}: train loss (last 20) {np.mean(losses[-20:]):.3f}")
    return model.eval(), time.perf_counter() - t0


@torch.no_grad()
def embed(model, patches, batch=64):
    model.eval()
    return torch.cat([model(torch.from_numpy(patches[i:i + batch])) for i in range(0, len(patches), batch)])


def step_times(a, stats, batch, log=print):
    """Median seconds per training step of a fresh CNN and KAN on the same batch, alternated."""
    x, y = batch
    models = {k: ConvEmbedder(k, a.channels, a.embedding, *stats).train() for k in KINDS}
    opts = {k: torch.optim.Adam(m.parameters(), lr=a.lr) for k, m in models.items()}
    times = {k: [] for k in KINDS}
    for r in range(a.timing_rounds + 1):  # round 0 warms up
        for k in KINDS:
            t0 = time.perf_counter()
            for _ in range(a.timing_steps):
                loss = fewshot.batch_prototypical_loss(models[k](x), y)
                opts[k].zero_grad()
                loss.backward()
                opts[k].step()
            if r:
                times[k].append((time.perf_counter() - t0) / a.timing_steps)
    out = {k: float(np.median(v)) for k, v in times.items()}
    log(f"  step time: cnn {out['cnn'] * 1e3:.0f} ms, kan {out['kan'] * 1e3:.0f} ms, ratio {out['kan'] / out['cnn']:.2f}x")
    return out


# -- the run ----------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", nargs="+")
    p.add_argument("--train-genres", default=",".join(fewshot_eval.SEED_GENRES))
    p.add_argument("--test-genres", default=",".join(fewshot_eval.NEW_GENRES))
    p.add_argument("--swap", action="store_true", help="development direction (train and test genres exchanged)")
    p.add_argument("--shot-unit", choices=fewshot.SHOT_UNITS, default="window")
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--shots", default="1,5")
    p.add_argument("--n-query", type=int, default=5)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300, help="training steps per network")
    p.add_argument("--batch-way", type=int, default=5)
    p.add_argument("--batch-shot", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--channels", default="8,16,32")
    p.add_argument("--embedding", type=int, default=32)
    p.add_argument("--seeds", type=int, default=2, help="networks per kind")
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--timing-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads for training and timing")
    p.add_argument("--quick", action="store_true", help="tiny smoke run; numbers not meaningful")
    p.add_argument("--out", default=None, help="JSON results (default runs/conv_kan[_swap].json)")
    a = p.parse_args(argv)
    a.channels = tuple(int(c) for c in a.channels.split(","))
    if a.quick:
        a.episodes, a.steps, a.seeds, a.timing_rounds, a.timing_steps = 20, 3, 1, 1, 1
    if a.swap:
        a.train_genres, a.test_genres = a.test_genres, a.train_genres
    a.out = a.out or str(ROOT / "runs" / f"conv_kan{'_swap' if a.swap else ''}.json")
    return a


def main(argv=None, log=print):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    train_genres, test_genres = a.train_genres.split(","), a.test_genres.split(",")
    shots = [int(k) for k in a.shots.split(",")]
    x_tr, y_tr, t_tr, names_tr, _ = fewshot_eval.load_pool(a.data_dir, train_genres, "musicnn")
    x_te, y_te, t_te, names_te, starts_te = fewshot_eval.load_pool(a.data_dir, test_genres, "musicnn")
    t0 = time.perf_counter()
    mels = recording_log_mels(names_tr)
    mel_labels = np.asarray([y_tr[t_tr == t][0] for t in range(len(names_tr))])
    patches_te = row_patches(names_te, starts_te)
    frames = np.concatenate(mels)
    stats = (float(frames.mean()), float(frames.std()))
    log(f"train genres {train_genres}: {len(names_tr)} recordings; test genres {test_genres}: {len(y_te)} window "
        f"patches of {len(names_te)} recordings ({time.perf_counter() - t0:.0f} s)")

    timing = step_times(a, stats, sample_batch(np.random.default_rng(99), mels, mel_labels, a.batch_way, a.batch_shot),
                        log)
    sizes = {k: n_params(ConvEmbedder(k, a.channels, a.embedding)) for k in KINDS}
    methods, _, z_te, _ = fewshot_eval.feature_methods(x_tr, y_tr, x_te, frontend="musicnn")
    methods = {n: methods[n] for n in (fewshot_eval.BASELINE, fewshot_eval.MUSICNN_PRIMARY)}
    train_s = {}
    for kind in KINDS:
        embs = []
        for seed in range(a.seeds):
            model, secs = train_embedder(kind, mels, mel_labels, a, seed, stats, log)
            train_s.setdefault(kind, []).append(secs)
            embs.append(embed(model, patches_te))
        methods[f"{kind} euclidean"] = (embs, "euclidean")
        log(f"  trained {a.seeds} x {kind} ({sizes[kind]:,} parameters): {np.mean(train_s[kind]):.0f} s each")

    results = {}
    for k in shots:
        log(f"{a.n_way}-way {k}-shot, {a.episodes} episodes")
        episodes = fewshot_eval.draw_episodes(y_te, t_te, a.n_way, k, a.n_query, a.episodes, a.shot_unit)
        results[k] = fewshot_eval.summarise(fewshot_eval.score_methods(methods, z_te.numpy(), episodes, t_te, log=log))
    report = (fewshot_eval.table(results, shots) + "\n\n" + fewshot_eval.difference_table(results, shots)
              + "\n\n| network | parameters | step time (ms) | vs CNN | training wall time per network (s) |\n"
              + "|---|---:|---:|---:|---:|\n"
              + "\n".join(f"| {k} | {sizes[k]:,} | {timing[k] * 1e3:.0f} | {timing[k] / timing['cnn']:.2f}x | "
                          f"{np.mean(train_s[k]):.0f} |" for k in KINDS))
    print(report)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"settings": vars(a), "train_genres": train_genres, "test_genres": test_genres,
                                       "parameters": sizes, "step_seconds": timing, "train_seconds": train_s,
                                       "results": {str(k): v for k, v in results.items()}, "table": report},
                                      indent=2, default=list))
    log(f"written to {a.out}")
    return results


if __name__ == "__main__":
    main()
