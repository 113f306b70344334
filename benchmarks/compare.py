"""Train our model and the seed tutorials' two models on the same data for the same time, then compare.

    python benchmarks/compare.py --minutes 100 --out runs/compare

Every model gets one CPU core (one thread, pinned with taskset) for the same minutes of
training, through the same train.py with the same data, flips, seed and schedule; runs go
side by side, as many at once as there are cores (on a 2-core machine: ours and the seed
conv VAE together, then the seed MLP VAE). Each is then evaluated by the same command,
`python -m vae_demo.evaluate` on the test split (the decoder variance at its optimum on
the val split), and the script writes to OUT:

- comparison.md / comparison.json: the results table, and our time to reach each
  baseline's final PSNR;
- curves.png: val PSNR against training time for the three runs (the test split is touched
  once, at the end, so that nothing is tuned on it);
- faces.png: the same test faces reconstructed by each model, and samples from each
  model's fitted sampler with the same seeds.

Re-running with the same --out resumes unfinished runs from their checkpoints, and
evaluates again only models whose weights are newer than their evaluation;
--report-only writes the report from the runs and evaluations as they are, and --train
trains only the runs it names (the report takes in every run found in OUT), so that a new
"ours" can meet baselines trained before:

    python benchmarks/compare.py --minutes 90 --out runs/race --train seed seed_mlp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = {  # name: (label, train.py flags)
    "ours": ("ours", ["--arch", "conv"]),
    # The previous default: one global 256-number code instead of codes on an 8 x 8 grid.
    "ours_global": (
        "ours, one global code",
        ["--arch", "conv", "--no-spatial-latent", "--latent-dim", "256", "--channels", "16", "32", "64", "128", "256"],
    ),
    "seed": ("seed conv VAE", ["--arch", "seed", "--likelihood", "gaussian_fixed"]),
    "seed_mlp": ("seed MLP VAE", ["--arch", "seed_mlp", "--likelihood", "bernoulli"]),
}
ROWS = (  # path in the evaluation JSON (keys joined by /), label, format
    ("minutes", "training minutes (one CPU core)", "{:.0f}"),
    ("psnr", "test PSNR (dB) ↑", "{:.2f}"),
    ("eye_band_psnr", "test PSNR of the eye band (dB) ↑", "{:.2f}"),
    ("ssim", "test SSIM ↑", "{:.3f}"),
    ("neg_elbo_bits_per_dim", "test −ELBO (bits/dim) ↓", "{:.3f}"),
    ("neg_iwae_bits_per_dim", "test −IWAE bound, k = 64 (bits/dim) ↓", "{:.3f}"),
    ("neg_elbo_fitted_prior_bits_per_dim", "test −ELBO, learned prior (bits/dim) ↓", "{:.3f}"),
    ("neg_iwae_fitted_prior_bits_per_dim", "test −IWAE bound, learned prior (bits/dim) ↓", "{:.3f}"),
    ("kl_nats", "KL (nats)", "{:.0f}"),
    ("kl_fitted_prior_nats", "KL to the learned prior (nats)", "{:.0f}"),
    ("active_units", "active units", "{}"),
    ("samples/fitted_t0.8/fd", "sample FD, app's sampler (fitted, T 0.8) ↓", "{:.2f}"),
    ("samples/fitted_t1.0/fd", "sample FD, fitted, T 1 (the learned prior) ↓", "{:.2f}"),
    ("samples/prior_t1.0/fd", "sample FD, N(0, I) prior ↓", "{:.2f}"),
    ("samples/fitted_t0.8/precision", "sample precision, app's sampler ↑", "{:.2f}"),
    ("samples/fitted_t0.8/recall", "sample recall, app's sampler ↑", "{:.2f}"),
    ("kept/glasses/reconstructions", "glasses wearers whose reconstruction shows glasses ↑", "{:.0%}"),
    ("edits/glasses/success", "glasses edit: called glasses ↑", "{:.0%}"),
    ("edits/glasses/male_flips", "glasses edit: male call flips ↓", "{:.0%}"),
    ("edits/glasses/male_wrong_after", "glasses edit: sex calls against the data's labels, after ↓", "{:.0%}"),
    ("edits/glasses_held/success", "held glasses edit (the guide steers it): called glasses ↑", "{:.0%}"),
    ("edits/glasses_held/male_flips", "held glasses edit: male call flips ↓", "{:.0%}"),
    ("edits/glasses_own_strength/success", "held glasses edit, own strengths: called glasses ↑", "{:.0%}"),
    ("edits/glasses_own_strength/male_flips", "held glasses edit, own strengths: male call flips ↓", "{:.0%}"),
    ("edits/smiling/success", "smile edit: called smiling ↑", "{:.0%}"),
    ("edits/frame_light/success", "frame edit: dark called light ↑", "{:.0%}"),
    ("edits/frame_light/glasses_after", "frame edit: still called glasses ↑", "{:.0%}"),
    ("showcase/two_photos/mean", "showcase Spearman, two photos ↑", "{:.2f}"),
    ("interpolation/slerp/mean", "slerp path evenness (1 is even) ↓", "{:.2f}"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=100.0, help="training minutes for each model (default: 100)")
    parser.add_argument("--data", default="../shared/data/lfw", help="image collection (default: ../shared/data/lfw)")
    parser.add_argument("--out", default="runs/compare", help="folder for the runs (default: runs/compare)")
    parser.add_argument("--classifier", default="assets/classifier", help="for sample metrics (default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=1000, help="upper bound on epochs; time decides first (default: 1000)"
    )
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="runs at once (default: all cores)")
    parser.add_argument(
        "--report-only", action="store_true", help="no training: report on the runs as they are (default: off)"
    )
    parser.add_argument(
        "--train", nargs="+", choices=list(RUNS), default=list(RUNS), help="runs to train (default: all of them)"
    )
    parser.add_argument("extra", nargs="*", help="more train.py flags for every run, after --")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only and not train_all(args, out):
        return 1
    names = found_runs(out)
    if "ours" not in names:
        print(f"error: no finished run of ours in {out}; train it (--train ours)", file=sys.stderr)
        return 1
    curves = {name: read_curve(out / name / "metrics.jsonl") for name in names}
    results = {name: evaluate(name, args, out) | {"minutes": curves[name][-1][0]} for name in names}
    text = report(results, curves, args.minutes)
    print(text)
    (out / "comparison.md").write_text(text + "\n")
    (out / "comparison.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_curves(curves, out / "curves.png")
    face_grid({name: out / name / "model" for name in names}, args.data, out / "faces.png")
    print(f"wrote {out}/comparison.md, curves.png, faces.png")
    return 0


def train_all(args: argparse.Namespace, out: Path) -> bool:
    """Run every model's training, each on its own core, at most `cores` at once."""
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= args.cores
    pending, running, failed = list(args.train), {}, []
    while pending or running:
        free = [core for core in range(args.cores) if core not in running.values()]
        while pending and free:
            name, core = pending.pop(0), free.pop(0)
            command = [sys.executable, str(ROOT / "train.py"), "--data", args.data, "--out", str(out / name)]
            command += ["--time-budget-min", str(args.minutes), "--epochs", str(args.epochs), "--threads", "1"]
            command += ["--resume", "--save-fp16", *RUNS[name][1], *args.extra]
            if pin:
                command = ["taskset", "-c", str(core), *command]
            with open(out / f"{name}.log", "a") as log:
                running[subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)] = core
            print(f"started {name} on core {core}: {' '.join(command)}", flush=True)
        time.sleep(1)
        for process in [p for p in running if p.poll() is not None]:
            del running[process]
            if process.returncode != 0:
                failed.append(process.args)
    for command in failed:
        print(f"error: training failed: {' '.join(map(str, command))}; see its log in {out}", file=sys.stderr)
    return not failed


def found_runs(out: Path) -> list[str]:
    """The runs in `out` that finished (they have a model folder), in RUNS's order: ours first."""
    return [name for name in RUNS if (out / name / "model").is_dir()]


def evaluate(name: str, args: argparse.Namespace, out: Path) -> dict:
    """The model's test metrics; an evaluation written after its weights is reused."""
    path = out / f"{name}_test.json"
    if path.is_file() and path.stat().st_mtime > (out / name / "model" / "model.safetensors").stat().st_mtime:
        return json.loads(path.read_text())
    command = [sys.executable, "-m", "vae_demo.evaluate", "--model", str(out / name / "model"), "--data", args.data,
               "--split", "test", "--classifier", args.classifier, "--out", str(path)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(path.read_text())


def read_curve(path: Path) -> list[tuple[float, float]]:
    """(training minutes, val PSNR) after each epoch of a run's metrics log."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["train_seconds"] / 60, row["val_psnr"]) for row in rows if "val_psnr" in row]


def minutes_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first logged time at which a curve reaches the target PSNR (None: never)."""
    return next((minutes for minutes, value in curve if value >= target), None)


def lookup(metrics: dict, path: str):
    for key in path.split("/"):
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def report(results: dict, curves: dict, minutes: float) -> str:
    names = list(results)  # ours first, as in RUNS
    lines = [
        f"Each model trained on one CPU core for the minutes shown (budget {minutes:g}) "
        "by `python benchmarks/compare.py`, evaluated on the LFW test split.",
        "",
        "| | " + " | ".join(RUNS[n][0] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, fmt in ROWS:
        values = [lookup(results[n], key) for n in names]
        if all(v is None for v in values):
            continue
        lines.append(f"| {label} | " + " | ".join("–" if v is None else fmt.format(v) for v in values) + " |")
    lines.append("")
    for name in names[1:]:
        target = curves[name][-1][1] if curves[name] else None
        reached = minutes_to_reach(curves["ours"], target) if target is not None else None
        when = f"{reached:.0f} minutes" if reached is not None else "not within the budget"
        lines.append(f"- Ours reached the {RUNS[name][0]}'s final val PSNR ({target:.2f} dB) after {when}.")
    return "\n".join(lines)


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, curve in curves.items():
        if curve:
            ax.plot(*zip(*curve, strict=True), marker=".", label=RUNS[name][0])
    ax.set(xlabel="training time (minutes, one CPU core)", ylabel="val PSNR (dB)", title="Reconstruction over time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def face_grid(models: dict[str, Path], data: str, path: Path, n: int = 8) -> None:
    """Test faces (glasses wearers first) and each model's reconstructions, then each model's samples."""
    import torch
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    from vae_demo.data import load_split
    from vae_demo.hub import load_model
    from vae_demo.images import uint8_to_float

    loaded = {name: load_model(folder).float() for name, folder in models.items()}
    size = next(iter(loaded.values())).image_size
    test = load_split(data, "test", size)
    glasses = torch.nonzero(test.attributes["Eyeglasses"] > 0.9).flatten()[: n // 2]
    others = torch.nonzero(test.attributes["Eyeglasses"] < 0.1).flatten()[: n - len(glasses)]
    x = uint8_to_float(test.images[torch.cat([glasses, others])])
    rows, labels = [x], ["test photos"]
    with torch.inference_mode():
        for name, model in loaded.items():
            rows.append(model.reconstruct(x))
            labels.append(f"{RUNS[name][0]}: reconstructions")
        for name, model in loaded.items():
            z = model.latent_stats.sample(n, "fitted", 0.8, torch.Generator().manual_seed(0))
            rows.append(model.decode(z))
            labels.append(f"{RUNS[name][0]}: samples")
    grid = make_grid(torch.cat(rows).float().clamp(0, 1), nrow=n, padding=2, pad_value=1.0)
    faces = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    margin, font = 300, ImageFont.load_default(size=15)
    canvas = Image.new("RGB", (faces.width + margin, faces.height), "white")
    canvas.paste(faces, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        draw.text((8, 2 + i * (size + 2) + size // 2), label, fill="black", font=font, anchor="lm")
    canvas.save(path)


if __name__ == "__main__":
    sys.exit(main())
