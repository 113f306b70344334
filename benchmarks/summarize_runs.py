"""Print a Markdown table of the last validation line of each run folder's metrics.jsonl.

python benchmarks/summarize_runs.py runs/sweep/*/
"""

import json
import sys
from pathlib import Path

print("| run | minutes | epochs | val PSNR (dB) | val −ELBO (bits/dim) | KL (nats) |")
print("|---|---|---|---|---|---|")
for folder in map(Path, sys.argv[1:]):
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    epochs = last.get("epochs_done", last["epoch"])
    print(
        f"| {folder.name} | {last['train_seconds'] / 60:.1f} | {epochs:.1f} | {last['val_psnr']:.2f} "
        f"| {last['val_neg_elbo_bits_per_dim']:.3f} | {last['val_kl_nats']:.0f} |"
    )
