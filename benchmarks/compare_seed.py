"""Train our model and the seed tutorial's side by side for the same wall-clock time, then evaluate both.

    python benchmarks/compare_seed.py --minutes 100 --out runs/compare

Both runs start together, each pinned to its own CPU core with one thread (on a 2-core
machine: the fairest split of the hardware), go through the same train.py with the same
data, flips, seed and schedule, and stop after the same minutes of training. Both are then
evaluated on the test split with the decoder variance at its optimum on the val split, and
a Markdown table is printed and written to OUT/comparison.md (plus comparison.json).
Re-running with the same --out resumes both runs from their checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"ours": ["--arch", "conv"], "seed": ["--arch", "seed", "--likelihood", "gaussian_fixed"]}
ROWS = (
    ("psnr", "test PSNR (dB) ↑", "{:.2f}"),
    ("ssim", "test SSIM ↑", "{:.3f}"),
    ("neg_elbo_bits_per_dim", "test −ELBO (bits/dim) ↓", "{:.3f}"),
    ("kl_nats", "KL (nats)", "{:.0f}"),
    ("active_units", "active units", "{}"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=100.0, help="training minutes for each model (default: 100)")
    parser.add_argument("--data", default="../shared/data/lfw", help="image collection (default: ../shared/data/lfw)")
    parser.add_argument("--out", default="runs/compare", help="folder for both runs (default: runs/compare)")
    parser.add_argument(
        "--epochs", type=int, default=1000, help="upper bound on epochs; time decides first (default: 1000)"
    )
    parser.add_argument("extra", nargs="*", help="more train.py flags for both runs, after --")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pin = shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    processes = {}
    for core, (name, flags) in enumerate(RUNS.items()):
        command = [sys.executable, str(ROOT / "train.py"), "--data", args.data, "--out", str(out / name)]
        command += ["--time-budget-min", str(args.minutes), "--epochs", str(args.epochs), "--threads", "1"]
        command += ["--resume", "--save-fp16", *flags, *args.extra]
        if pin:
            command = ["taskset", "-c", str(core), *command]
        log = open(out / f"{name}.log", "a")
        processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        print(f"started {name}: {' '.join(command)}")
    failed = [name for name, p in processes.items() if p.wait() != 0]
    if failed:
        print(f"error: training failed for {failed}; see {out}/<name>.log", file=sys.stderr)
        return 1

    results = {}
    for name in RUNS:
        metrics_path = out / f"{name}_test.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vae_demo.evaluate",
                "--model",
                str(out / name / "model"),
                "--data",
                args.data,
                "--split",
                "test",
                "--out",
                str(metrics_path),
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        results[name] = json.loads(metrics_path.read_text())
    table = ["| | ours | seed tutorial |", "|---|---|---|"]
    for key, label, fmt in ROWS:
        table.append(f"| {label} | {fmt.format(results['ours'][key])} | {fmt.format(results['seed'][key])} |")
    text = f"Both trained for {args.minutes:g} minutes, one CPU core each, in one run.\n\n" + "\n".join(table)
    print(text)
    (out / "comparison.md").write_text(text + "\n")
    (out / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
