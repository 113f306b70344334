"""Evaluation JSONs side by side, one column each: the table that decides between models.

    python -m vae_demo.evaluate --model assets/model --split val --iwae-k 0 --out runs/eval/bundled_val.json
    python -m vae_demo.evaluate --model runs/new/model --split val --iwae-k 0 --out runs/eval/new_val.json
    python benchmarks/side_by_side.py runs/eval/bundled_val.json runs/eval/new_val.json

The rows are benchmarks/compare.py's, then the showcase's direction mode, the app's first view.
Columns are named after the files; compare on val, report on test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import ROWS, lookup  # noqa: E402

SHOWCASE_ROWS = (
    ("kept/frame_light/reconstructions", "frame colour called right in reconstructions ↑", "{:.0%}"),
    ("edits/frame_light/n", "frame edit: dark-framed faces", "{}"),
    ("showcase/direction/mean", "showcase Spearman, along the direction ↑", "{:.2f}"),
    ("showcase/direction/start_called_dark", "showcase: start called dark ↑", "{:.0%}"),
    ("showcase/direction/end_called_light", "showcase: end called light ↑", "{:.0%}"),
    ("showcase/direction/frames_called_glasses", "showcase: frames called glasses ↑", "{:.0%}"),
    ("showcase/direction/change_in_eye_band", "showcase: change in the eye band", "{:.3f}"),
    ("showcase/direction/change_elsewhere", "showcase: change elsewhere ↓", "{:.3f}"),
)


def table(results: dict[str, dict]) -> str:
    names = list(results)
    split = {lookup(r, "split") for r in results.values()} - {None}
    lines = [f"| {'/'.join(sorted(split)) or 'split?'} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label, fmt in (*ROWS, *SHOWCASE_ROWS):
        values = [lookup(results[n], key) for n in names]
        if all(v is None for v in values):
            continue
        cells = " | ".join("–" if v is None else fmt.format(v) for v in values)
        lines.append(f"| {label.removeprefix('test ')} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluations", nargs="+", type=Path, help="JSON files written by vae_demo.evaluate --out")
    args = parser.parse_args()
    print(table({path.stem: json.loads(path.read_text()) for path in args.evaluations}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
