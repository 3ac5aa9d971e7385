"""Time forward+backward of KANLinear against nn.Linear + SiLU at the expert's shapes.

Usage::

    python benchmarks/bench_kan_layer.py [--batch 64] [--repeats 30] [--iters 20] [--threads N]

Every case is timed in the same run, interleaved (each repeat times a block of ``--iters``
steps of every case in turn), so load from other processes hits all cases alike; the figure per
case is the median over repeats of the mean step time in a block. Ratios are against the MLP
baseline of the same row. ``QUICK=1`` cuts the repeats for a smoke run.

Rows:
  * same shape: ``KANLinear(in, out)`` vs ``Linear(in, out) + SiLU``;
  * matched parameters: ``KANLinear(in, out)`` vs ``Linear(in, H) + SiLU + Linear(H, out)`` with
    H chosen so both have about the same parameter count;
  * expert: the expert stack 128 -> 64 -> 32 (two KANLinear vs Linear + SiLU + Linear).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kan import KANLinear  # noqa: E402

SHAPES = ((128, 64), (64, 64), (64, 32))
KAN_VARIANTS = (  # label, kwargs
    ("kan bspline g5 k3", dict(grid_size=5, spline_order=3, basis="bspline")),
    ("kan rbf 8", dict(grid_size=5, spline_order=3, basis="rbf")),
    ("kan bspline g3 k2", dict(grid_size=3, spline_order=2, basis="bspline")),
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp(in_features: int, out_features: int, hidden: int = 0) -> nn.Module:
    """``Linear + SiLU`` (hidden=0) or ``Linear + SiLU + Linear`` through ``hidden`` units."""
    if hidden == 0:
        return nn.Sequential(nn.Linear(in_features, out_features), nn.SiLU())
    return nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, out_features))


def matched_hidden(in_features: int, out_features: int, target_params: int) -> int:
    """Width H of ``in -> H -> out`` whose parameter count is closest to ``target_params``."""
    return max(1, round((target_params - out_features) / (in_features + out_features + 1)))


def make_step(module: nn.Module, batch: int, in_features: int):
    """A closure doing one forward+backward on a fixed input that requires grad (as an expert's
    input does: it comes from the trained encoder)."""
    x = torch.randn(batch, in_features).requires_grad_()

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).square().mean().backward()

    return step


def time_cases(cases, repeats: int, iters: int):
    """Median over repeats of the mean step time (microseconds) of each case, interleaved."""
    for step in cases.values():  # warm-up
        for _ in range(5):
            step()
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, step in cases.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                step()
            samples[name].append((time.perf_counter() - t0) / iters * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def build_rows(batch: int):
    """Rows of (row label, {case: step}, {case: n_params}); the first case is the baseline."""
    rows = []
    for fin, fout in SHAPES:
        cases, params = {}, {}
        base = mlp(fin, fout)
        cases["linear+silu"], params["linear+silu"] = make_step(base, batch, fin), n_params(base)
        for label, kw in KAN_VARIANTS:
            layer = KANLinear(fin, fout, **kw)
            cases[label], params[label] = make_step(layer, batch, fin), n_params(layer)
        rows.append((f"same shape {fin}->{fout}", cases, params))

        kan = KANLinear(fin, fout, **KAN_VARIANTS[0][1])
        hidden = matched_hidden(fin, fout, n_params(kan))
        wide = mlp(fin, fout, hidden)
        rows.append(
            (
                f"matched params {fin}->{fout}",
                {f"mlp {fin}->{hidden}->{fout}": make_step(wide, batch, fin), KAN_VARIANTS[0][0]: make_step(kan, batch, fin)},
                {f"mlp {fin}->{hidden}->{fout}": n_params(wide), KAN_VARIANTS[0][0]: n_params(kan)},
            )
        )

    cases, params = {}, {}
    expert_mlp = nn.Sequential(nn.Linear(128, 64), nn.SiLU(), nn.Linear(64, 32))
    cases["mlp expert"], params["mlp expert"] = make_step(expert_mlp, batch, 128), n_params(expert_mlp)
    for label, kw in KAN_VARIANTS:
        expert = nn.Sequential(KANLinear(128, 64, **kw), KANLinear(64, 32, **kw))
        name = label.replace("kan", "kan expert")
        cases[name], params[name] = make_step(expert, batch, 128), n_params(expert)
    rows.append(("expert 128->64->32", cases, params))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5 if os.environ.get("QUICK") == "1" else 30)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"{args.repeats} repeats x {args.iters} steps, forward+backward, median of block means"
    )
    print(f"{'row':<26} {'case':<30} {'params':>8} {'us/step':>9} {'ratio':>6}")
    for row, cases, params in build_rows(args.batch):
        times = time_cases(cases, args.repeats, args.iters)
        baseline = next(iter(times.values()))
        for name, t in times.items():
            print(f"{row:<26} {name:<30} {params[name]:>8} {t:>9.1f} {t / baseline:>5.2f}x")


if __name__ == "__main__":
    main()
