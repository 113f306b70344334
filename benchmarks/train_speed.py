"""Training speed of model settings side by side: images per second through train.train_step.

    python benchmarks/train_speed.py                      # CUDA if present, else the CPU
    python benchmarks/train_speed.py --batch-sizes 64 256 --widths 16 32 --rounds 5

Each setting (encoder width x batch size) gets the same random batch and the same step as
training (bfloat16 autocast on CUDA, the negative ELBO, AdamW). The settings take turns,
`--steps` timed steps each per round, so a noisy neighbour slows all of them alike; the
table gives each one's median over rounds and its speed relative to the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from train import TrainConfig, build_model, train_step  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu (default: auto)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[64, 256], help="images per step, each timed (default: 64 256)"
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[16, 32],
        help="first encoder widths, doubling per stage (default: 16 32)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting and round (default: 20)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds over all settings, interleaved so that noise hits all alike (default: 5)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)

    settings = []
    for width in args.widths:
        cfg = TrainConfig(channels=tuple(width * 2**i for i in range(4)))
        for batch_size in args.batch_sizes:
            model = build_model(cfg).to(device).to(memory_format=torch.channels_last)
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
            x = torch.rand(batch_size, 3, cfg.image_size, cfg.image_size, device=device)
            x = x.contiguous(memory_format=torch.channels_last)
            name = f"width {width}, batch {batch_size}"
            params = sum(p.numel() for p in model.parameters()) / 1e6
            settings.append((name, params, model, optimizer, x))
            for _ in range(3):  # warm-up: kernel selection, allocator
                train_step(model, model, optimizer, x, 1.0, TrainConfig.grad_clip)

    seconds = {name: [] for name, *_ in settings}
    for _ in range(args.rounds):
        for name, _, model, optimizer, x in settings:
            sync(device)
            tic = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, model, optimizer, x, 1.0, TrainConfig.grad_clip)
            sync(device)
            seconds[name].append((time.perf_counter() - tic) / args.steps)

    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{label}, torch {torch.__version__}, median of {args.rounds} rounds x {args.steps} steps")
    print("| setting | parameters (M) | ms per step | images per second | speed vs first |")
    print("|---|---|---|---|---|")
    first = None
    for name, params, _, _, x in settings:
        step = statistics.median(seconds[name])
        rate = len(x) / step
        first = first or rate
        print(f"| {name} | {params:.1f} | {1000 * step:.1f} | {rate:.0f} | {rate / first:.2f} |")
    return 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
