"""Does another estimate of the glasses direction edit more cleanly? Male flips at equal success.

    python benchmarks/glasses_directions.py --model assets/model --data ../shared/data/lfw --split val

Every estimator starts from the same two groups of train codes the app's direction averages
(`latent_stats.direction_groups`: wearers whose reconstructions show glasses, non-wearers
whose do not, balanced over sex and age), is made orthogonal to the Male direction and scaled
to its decoded unit, as the app's is, and then edits the same faces without glasses:
- mean difference: the app's direction (`vae_demo/latent_stats.py`);
- over the eyes: the same, kept to the code cells over the eyes (`ConvVAE.cells_over`), its
  decoded unit measured across the eye band, as for the frame-colour direction;
- logistic normal: the normal of a logistic regression that tells the two groups apart on
  standardised codes (InterFaceGAN's attribute boundary, Shen et al. 2020);
- whitened: the mean difference times the inverse of the training codes' covariance, shrunk
  towards the identity (Fisher's linear discriminant);
- within person: not from those groups but from the train people photographed both with and
  without glasses (confident either way): the mean over them of the difference between their
  mean code with and without, so that sex, age and face cancel within each person; once with
  all their confident photos, once with only those whose reconstructions agree (glasses
  called on the wearing photos, not on the others), as the groups above are picked.
The decoded unit makes strength 1 draw the groups' whole picture difference, so the
estimators differ in what else they draw. Printed per estimator: the share called "glasses"
and the share whose male/female call flips at each strength, and then the smallest strength
(to 1/32) at which the share called glasses reaches `--success` (the goal's 90%), with the
flips there: the estimators compared at equal success.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.edit_strengths import add_judged_edit_options  # noqa: E402
from vae_demo.classifier import load_local  # noqa: E402
from vae_demo.data import load_split  # noqa: E402
from vae_demo.evaluate import (  # noqa: E402
    GLASSES_CONFIDENT,
    edit_effect,
    faces_without,
    posterior,
    reconstruction_calls,
)
from vae_demo.hub import load_model  # noqa: E402
from vae_demo.images import EYE_BAND, eye_band  # noqa: E402
from vae_demo.latent_stats import decoded_unit, direction_groups, orthogonal_part  # noqa: E402

Estimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (positives, negatives) codes -> (D,)


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return pos.mean(0) - neg.mean(0)


def logistic_normal(pos: torch.Tensor, neg: torch.Tensor, l2: float = 0.1) -> torch.Tensor:
    """The normal, in code coordinates, of an L2-penalised logistic regression of positives against negatives."""
    x = torch.cat([pos, neg])
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
    centre, scale = x.mean(0), x.std(0) + 1e-6
    x = (x - centre) / scale
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * w.pow(2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return w.detach() / scale  # the boundary w . (z - centre) / scale + b = 0 has normal w / scale in codes


def within_person(
    codes: torch.Tensor, wearing: torch.Tensor, bare: torch.Tensor, people: list[str]
) -> tuple[torch.Tensor, int]:
    """The mean over people with rows in both masks of (their mean code wearing - their mean code bare).

    Args:
        codes: (N, D) codes; wearing, bare: (N,) bool masks of photos with and without glasses;
        people: (N,) the person in each photo.

    Returns:
        The direction (D,) and the number of people it averages.

    Usage (one person in both groups, one only without):
        >>> codes = torch.tensor([[1.0], [3.0], [0.0], [9.0]])
        >>> wearing, bare = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])
        >>> within_person(codes, wearing, bare, ["a", "a", "a", "b"])
        (tensor([2.]), 1)
    """
    index = {person: i for i, person in enumerate(dict.fromkeys(people))}
    person = torch.tensor([index[p] for p in people])

    def mean_per_person(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros(len(index), codes.shape[1]).index_add_(0, person[mask], codes[mask])
        count = torch.zeros(len(index)).index_add_(0, person[mask], torch.ones(int(mask.sum())))
        return total / count.clamp_min(1).unsqueeze(1), count > 0

    with_glasses, has_with = mean_per_person(wearing)
    without, has_without = mean_per_person(bare)
    both = has_with & has_without
    return (with_glasses[both] - without[both]).mean(0), int(both.sum())


def whitened(cov: torch.Tensor, shrink: float = 1.0) -> Estimator:
    """Fisher's discriminant: the mean difference times (cov + shrink * mean variance * I)^-1."""
    ridge = shrink * cov.diagonal().mean() * torch.eye(len(cov), dtype=torch.float64)
    return lambda pos, neg: torch.linalg.solve(cov.double() + ridge, mean_difference(pos, neg).double()).float()


def first_reaching(effect: Callable[[float], dict], success: float) -> tuple[float, dict | None]:
    """The smallest strength (to 1/32) whose edit is called glasses on `success` of the faces, and its effect.

    A coarse scan first, then bisection below the first strength that reaches it: success
    need not grow with the strength all the way (a strong edit draws something else).
    """
    low = 0.0
    for high in torch.arange(0.25, 3.01, 0.25).tolist():
        if effect(high)["success"] >= success:
            break
        low = high
    else:
        return 3.0, None
    for _ in range(3):
        middle = (low + high) / 2
        low, high = (middle, high) if effect(middle)["success"] < success else (low, middle)
    return high, effect(high)


def called_and_flipped(effect: dict) -> str:
    return f"{100 * effect['success']:.1f}% / {100 * effect['male_flips']:.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_judged_edit_options(parser, split="val")
    parser.add_argument(
        "--strengths",
        type=float,
        nargs="+",
        default=[0.5, 1, 1.5],
        help="edit strengths in decoded units (default: 0.5 1 1.5)",
    )
    parser.add_argument("--success", type=float, default=0.9, help="share called glasses to match (default: 0.9)")
    args = parser.parse_args()

    model = load_model(args.model)
    classifier = load_local(args.classifier, "nothing to judge the edits by")
    if classifier is None or model.latent_stats is None or "Male" not in model.latent_stats.directions:
        print("error: needs the attribute classifier and a model with a Male direction", file=sys.stderr)
        return 1
    stats = model.latent_stats
    train = load_split(args.data, "train", model.image_size)
    codes, _ = posterior(model, train.images)
    shown = reconstruction_calls(model, classifier, codes)
    glasses = train.attributes["Eyeglasses"]
    pos, neg, _ = direction_groups("Eyeglasses", glasses, train.attributes, shown)
    male = stats.directions["Male"]
    eye_cells = model.cells_over(EYE_BAND)

    estimators: dict[str, Estimator] = {"mean difference (the app's)": mean_difference}
    if eye_cells is not None:
        estimators["over the eyes"] = lambda p, n: mean_difference(p, n) * eye_cells
    estimators["logistic normal"] = logistic_normal
    estimators["whitened"] = whitened(stats.cov)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return model.decode(z.to(model.device))

    estimates = {name: estimate(codes[pos], codes[neg]) for name, estimate in estimators.items()}
    people = [Path(path).parent.name for path in train.paths]
    wearing, bare = glasses > GLASSES_CONFIDENT, glasses < 1 - GLASSES_CONFIDENT  # as confident as the groups
    estimates["within person"], n_all = within_person(codes, wearing, bare, people)
    agree = shown["Eyeglasses"]
    estimates["within person, reconstructions agree"], n_agree = within_person(
        codes, wearing & (agree > 0.5), bare & (agree < 0.5), people
    )

    # the decoded unit's search starts from the mean difference's length: the estimators' own differ widely
    length = mean_difference(codes[pos], codes[neg]).norm()
    directions = {}
    for name, estimate in estimates.items():
        direction, _ = orthogonal_part(estimate, male)
        direction = direction * (length / direction.norm())
        rows = eye_band(model.image_size) if name == "over the eyes" else slice(None)
        directions[name] = direction * decoded_unit(decode, codes, direction, pos, neg, rows)

    data = load_split(args.data, args.split, model.image_size)
    mu, _ = posterior(model, data.images)
    faces = mu[faces_without(data, "Eyeglasses", args.faces)]  # the faces edit_strengths.py edits

    def effect(strength: float) -> dict:
        return edit_effect(model, classifier, faces, "Eyeglasses", strength, batch_size=128)

    print(f"Glasses edit on {len(faces)} {args.split} faces without glasses ({args.model}; groups of {len(pos)};")
    print(f"{n_all} people photographed with and without glasses, {n_agree} where the reconstructions agree)\n")
    print("| estimator | cosine with the app's | " + " | ".join(f"strength {s:g}" for s in args.strengths), end="")
    print(f" | reaches {100 * args.success:g}% at: strength, called / flips |")
    print("|---|---|" + "---|" * (len(args.strengths) + 1))
    app = directions["mean difference (the app's)"]
    for name, direction in directions.items():
        stats.directions["Eyeglasses"] = direction
        cells = [called_and_flipped(effect(strength)) for strength in args.strengths]
        strength, at = first_reaching(effect, args.success)
        cells.append("not up to 3" if at is None else f"{strength:.2f}: {called_and_flipped(at)}")
        cosine = F.cosine_similarity(direction, app, dim=0)
        print(f"| {name} | {cosine:.2f} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
