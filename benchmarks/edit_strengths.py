"""How strong must an edit be? The measurements behind the app's edit and showcase settings.

    python benchmarks/edit_strengths.py --model assets/model --data ../shared/data/lfw

Prints three tables for one model, judged by the bundled attribute classifier on the test split
(tune on `--split val`, report on test; `--faces 100000` edits all of a split's faces without
glasses, 985 on val, where the default 400 happen to flip a point fewer male calls):
1. The glasses direction added at several strengths to faces without glasses: the share
   called "glasses", the share whose male/female call flips, and the share whose call
   contradicts the data's label before and after the edit (faces sure of their sex there);
   then the same for the held edit, which the guide classifier steers to keep the sex call
   (`vae_demo.guide`; the strength the evaluation holds is HELD_GLASSES_STRENGTH there), and
   the held edit with each face at its own strength (`guide.own_strengths`, for each `--seen`).
2. The frame-colour direction added at the same strengths to dark-framed faces (as the
   evaluation picks them): the share called light-framed, and still called "glasses".
3. The showcase's direction mode (`Studio.frame_colour_endpoints`) for each hand-labelled
   glasses wearer, over a grid of glasses strengths and dark/light spreads: Spearman of
   P(light frames) with t, frames called glasses, starts called dark, ends called light, and
   the mean absolute pixel change from start to end across the eye band and elsewhere.
The app's defaults live in vae_demo/studio.py (DEFAULT_EDIT_STRENGTH, SHOWCASE_GLASSES,
SHOWCASE_SPREAD). A model trained on other photos may want another showcase; store the
settings chosen here in its folder, where the app and the evaluation find them:

    python -m vae_demo.latent_stats --model DIR --showcase GLASSES SPREAD
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_demo.classifier import load_local  # noqa: E402
from vae_demo.data import load_split  # noqa: E402
from vae_demo.evaluate import dark_framed, edit_effect, faces_without, posterior, showcase_metrics  # noqa: E402
from vae_demo.guide import OWN_STRENGTH_GRID, SEEN, load_guide, own_strengths  # noqa: E402
from vae_demo.hub import load_model  # noqa: E402
from vae_demo.studio import Studio  # noqa: E402


def percent(share: float | None, digits: int = 0) -> str:
    return "n/a" if share is None else f"{100 * share:.{digits}f}%"


GLASSES_COLUMNS = "called glasses | male call flips | male call wrong: before / after"


def glasses_cells(effect: dict) -> str:
    """The GLASSES_COLUMNS of one glasses edit (`edit_effect`), in tenths of a percent: a goal's 5% needs them."""
    wrong = f"{percent(effect['male_wrong_before'], 1)} / {percent(effect['male_wrong_after'], 1)}"
    return f"{percent(effect['success'], 1)} | {percent(effect['male_flips'], 1)} | {wrong}"


def add_judged_edit_options(parser: argparse.ArgumentParser, split: str) -> None:
    """The options of every benchmark that edits faces and judges them: model, data, judge, faces."""
    parser.add_argument("--model", default="assets/model", help="model folder (default: %(default)s)")
    parser.add_argument("--data", default="../shared/data/lfw", help="LFW-layout data (default: %(default)s)")
    parser.add_argument(
        "--classifier",
        default="assets/classifier",
        help="attribute classifier that judges the edits (default: %(default)s)",
    )
    parser.add_argument("--split", default=split, choices=("val", "test"), help="faces to edit (default: %(default)s)")
    parser.add_argument("--faces", type=int, default=400, help="faces without glasses to edit (default: %(default)s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judged_edit_options(parser, split="test")
    parser.add_argument(
        "--strengths",
        type=float,
        nargs="+",
        default=[0.5, 1, 1.5, 2, 3],
        help="glasses and frame edits (default: 0.5 1 1.5 2 3)",
    )
    parser.add_argument(
        "--guide",
        default="assets/guide",
        help="the guide that steers the held glasses edits: a classifier's folder, or a folder of several, "
        "averaged ('' skips them; default: %(default)s)",
    )
    parser.add_argument(
        "--seen",
        type=float,
        nargs="+",
        default=[SEEN],
        help="the guide's P(glasses) that sets each face's own strength (default: %(default)s)",
    )
    parser.add_argument(
        "--showcase-glasses",
        type=float,
        nargs="+",
        default=[0, 1, 2.5],
        help="showcase glasses strengths (default: 0 1 2.5)",
    )
    parser.add_argument(
        "--spreads", type=float, nargs="+", default=[1, 2.5], help="showcase dark/light spreads (default: 1 2.5)"
    )
    args = parser.parse_args()

    model = load_model(args.model)
    classifier = load_local(args.classifier, "nothing to judge the edits by")
    if classifier is None:
        return 1
    data = load_split(args.data, args.split, model.image_size)
    mu, _ = posterior(model, data.images)

    without = faces_without(data, "Eyeglasses", args.faces)
    male = data.attributes["Male"][without] if "Male" in data.attributes else None
    guide = load_guide(args.guide, "no held edits") if args.guide else None
    plain = f"Glasses edit on {len(without)} {args.split} faces without glasses ({args.model})"
    held = f"Held glasses edit, steered by {args.guide}, on the same faces"
    for title, steer in ((plain, None), (held, guide)):
        if title is held and guide is None:
            continue
        print(f"{title}\n\n| strength | {GLASSES_COLUMNS} |\n|---|---|---|---|")
        for strength in args.strengths:
            effect = edit_effect(
                model, classifier, mu[without], "Eyeglasses", strength, 128, male_labels=male, guide=steer
            )
            print(f"| {strength:g} | {glasses_cells(effect)} |")
        print()
    if guide is not None:
        print(f"Held glasses edit, each face at its own strength (the least of {OWN_STRENGTH_GRID} at which")
        print("the guide's P(glasses) passes the level `seen`), on the same faces\n")
        print(f"| seen | mean strength | at the largest | {GLASSES_COLUMNS} |\n|---|---|---|---|---|---|")
        for seen in args.seen:
            own = own_strengths(model, guide, mu[without], "Eyeglasses", seen)
            effect = edit_effect(model, classifier, mu[without], "Eyeglasses", own, 128, male_labels=male, guide=guide)
            top = percent(float((own == OWN_STRENGTH_GRID[-1]).double().mean()), 1)
            print(f"| {seen:g} | {own.mean():.2f} | {top} | {glasses_cells(effect)} |")
        print()

    rows, reference, _ = dark_framed(model, classifier, data, mu)
    print(f"Frame-colour edit on {len(rows)} dark-framed {args.split} faces\n")
    print("| strength | called light | still called glasses |\n|---|---|---|")
    for strength in args.strengths:
        effect = edit_effect(model, classifier, mu[rows], "frame_light", strength, 128, reference)
        print(f"| {strength:g} | {percent(effect['success'])} | {percent(effect['glasses_after'])} |")

    studio = Studio(model, examples=[])
    glasses_now, spread_now = studio.showcase_settings()
    whose = "its own" if studio.stats.showcase else "the app's defaults"
    print(f"\nShowcase along the frame-colour direction, hand-labelled {args.split} wearers")
    print(f"(the model's showcase now: glasses {glasses_now:g}, spread {spread_now:g}, {whose})\n")
    print(
        "| glasses | spread | Spearman | frames called glasses | start called dark | end called light "
        "| change in the eye band / elsewhere |"
    )
    print("|---|---|---|---|---|---|---|")
    for glasses in args.showcase_glasses:
        for spread in args.spreads:
            seen = showcase_metrics(model, classifier, data, mu, max_pairs=0, glasses=glasses, spread=spread)
            d = seen["direction"]
            print(
                f"| {glasses:g} | {spread:g} | {d['mean']:.2f} | {percent(d['frames_called_glasses'])} "
                f"| {percent(d['start_called_dark'])} | {percent(d['end_called_light'])} "
                f"| {d['change_in_eye_band']:.3f} / {d['change_elsewhere']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
