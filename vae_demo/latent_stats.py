"""What we know about the latent space after training: where the codes lie, and where attributes point.

Two samplers: the prior N(0, I) the model was trained against, and a "fitted" Gaussian
N(mean, cov) of the training set's posterior means. With a small decoder variance the
aggregate posterior covers only part of the prior, so prior samples fall where the decoder
saw no codes (grey blurs); the fitted sampler stays where it did.

The fitted Gaussian is also a learned prior, fitted after training (empirical Bayes): the
decoder with p(z) = N(mean, cov) is a generative model whose samples are the fitted
sampler's at temperature 1, and whose ELBO (`kl`, `log_prob`) is tighter than with N(0, I).
It is the aggregate posterior's Gaussian, mean E[mu] and covariance Cov(mu) + E[diag sigma^2]:
of all Gaussian priors, the one that makes the ELBO's KL term smallest on the codes it is
fitted to. (For the bundled model the posterior variances are small beside the spread of the
means, 0.006 against 1.08 per entry, so it samples almost as the means' Gaussian did.)

Attribute directions are differences of mean codes of confident positives and negatives,
balanced over confounders (Tom White, "Sampling Generative Networks", 2016): the glasses
direction takes as many men as women on both sides, so that adding glasses does not also
change sex. For the glasses, the wearers averaged are those whose reconstructions show them
(the attribute classifier's call): most wearers here have thin light frames that the decoder
draws faintly, and their mean code draws barely any glasses. Frame colour likewise takes the
wearers whose reconstructions show glasses of their labelled colour, and where the code is a
grid it keeps only the cells over the eyes: the two groups' whole-face difference also
lightens skin and hair, which a change of frames should leave alone.

The unit of every direction is set by the decoder: strength 1 draws, on average, the whole
difference between the two groups' reconstructions. The difference of mean codes alone would
draw less, and less the sharper the decoder (the mean of codes decodes fainter than the mean
of pictures), so that a better model would edit more weakly at the same slider setting.

Usage:
    >>> import torch
    >>> codes = torch.randn(100, 8)
    >>> stats = LatentStats.fit(codes)
    >>> stats.sample(4, sampler="fitted", generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vae_demo.objective import gaussian_log_prob, kl_to_gaussian

LATENT_STATS_FILE = "latent_stats.safetensors"
SAMPLERS = ("fitted", "prior")
Decoder = Callable[[torch.Tensor], torch.Tensor]  # codes (B, D) -> pictures (B, C, H, W) in [0, 1]


@dataclass
class LatentStats:
    """Mean and covariance of training codes, and named attribute directions.

    A direction is the difference of its groups' mean codes, scaled (where the decoder was at
    hand) so that an edit with strength 1 draws as much of a change as separates the groups'
    pictures (`decoded_unit`).
    """

    mean: torch.Tensor  # (D,)
    cov: torch.Tensor  # (D, D): Cov(mu) + E[diag sigma^2], or Cov(mu) where fitted without the variances
    directions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (D,)
    info: dict[str, dict] = field(default_factory=dict)  # name -> how it was computed
    # The showcase's settings for these directions, {"glasses": strength, "spread": s}, chosen
    # on the val split (benchmarks/edit_strengths.py); None: the app's defaults (studio.py).
    showcase: dict[str, float] | None = None

    @classmethod
    def fit(
        cls,
        codes: torch.Tensor,
        attributes: dict[str, torch.Tensor] | None = None,
        frame_light: torch.Tensor | None = None,
        shown: dict[str, torch.Tensor] | None = None,
        eye_cells: torch.Tensor | None = None,
        decode: Decoder | None = None,
        eye_rows: slice | None = None,
        logvar: torch.Tensor | None = None,
    ) -> LatentStats:
        """The Gaussian of codes (N, D), and attribute directions where labels are given.

        `codes` are the posterior means; with their log-variances `logvar` (N, D) the Gaussian
        is the aggregate posterior's (the ELBO's best Gaussian prior), without them the means'.
        `shown`, `eye_cells`, `decode` and `eye_rows` are passed on to `compute_directions`.
        """
        cov = torch.cov(codes.double().T)
        if logvar is not None:
            cov += torch.diag(logvar.double().exp().mean(0))
        stats = cls(mean=codes.double().mean(0).float(), cov=cov.float())
        if attributes:
            stats.directions, stats.info = compute_directions(
                codes, attributes, frame_light, shown, eye_cells=eye_cells, decode=decode, eye_rows=eye_rows
            )
        return stats

    def sample(
        self,
        n: int,
        sampler: str = "fitted",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """n codes from the fitted Gaussian or the N(0, I) prior, spread scaled by temperature."""
        eps = torch.randn(n, self.mean.numel(), generator=generator) * temperature
        if sampler == "prior":
            return eps
        if sampler != "fitted":
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        return self.mean + eps @ self.cholesky().T

    def cholesky(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The fitted Gaussian's scale L (D, D), lower triangular: what `sample` draws with."""
        jitter = 1e-5 * self.cov.diagonal().mean()
        cov = self.cov.double() + jitter * torch.eye(len(self.cov), dtype=torch.float64)
        return torch.linalg.cholesky(cov).to(dtype)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(mean, cov)) per posterior (N,), in nats: the ELBO's KL with the fitted prior."""
        return kl_to_gaussian(mu.double(), logvar.double(), self.mean.double(), self.cholesky(torch.float64))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, cov) per code (M,): the fitted prior's density, for importance weights."""
        return gaussian_log_prob(z.double(), self.mean.double(), self.cholesky(torch.float64))

    def save(self, path: str | Path) -> None:
        tensors = {"mean": self.mean.contiguous(), "cov": self.cov.contiguous()}
        tensors |= {f"direction.{name}": d.contiguous() for name, d in self.directions.items()}
        metadata = {"info": json.dumps(self.info)}
        if self.showcase is not None:
            metadata["showcase"] = json.dumps(self.showcase)
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> LatentStats:
        from safetensors import safe_open

        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        info, showcase = json.loads(metadata.get("info", "{}")), json.loads(metadata.get("showcase", "null"))
        directions = {k.removeprefix("direction."): v for k, v in tensors.items() if k.startswith("direction.")}
        return cls(mean=tensors["mean"], cov=tensors["cov"], directions=directions, info=info, showcase=showcase)


def balanced_groups(
    positive: torch.Tensor, negative: torch.Tensor, strata: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of positives and negatives with the same mix of confounders.

    Args:
        positive, negative: Boolean masks (N,) of confident positives and negatives.
        strata: Integer stratum of each row (N,), e.g. 2 * male + young. Within each stratum
            the larger side is cut (deterministically, first rows first) to the size of the
            smaller. None: one stratum.

    Returns:
        Indices (P,) and (P,) of the rows kept on each side; empty where no stratum has both.
    """
    if strata is None:
        strata = torch.zeros(len(positive), dtype=torch.long)
    keep_pos, keep_neg = [], []
    for s in strata.unique().tolist():
        pos = torch.nonzero(positive & (strata == s)).flatten()
        neg = torch.nonzero(negative & (strata == s)).flatten()
        k = min(len(pos), len(neg))
        keep_pos.append(pos[:k])
        keep_neg.append(neg[:k])
    return torch.cat(keep_pos), torch.cat(keep_neg)


def attribute_direction(
    codes: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    orthogonal_to: torch.Tensor | None = None,
    within: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Mean code of positives minus mean code of negatives.

    Args:
        codes: Posterior means, (N, D).
        positives, negatives: The rows of each group, as indices (`balanced_groups`) or
            boolean masks (N,).
        orthogonal_to: A direction (D,) whose component is then removed ("removed_length").
        within: Boolean mask (D,) of the code entries the direction may touch (both it and
            `orthogonal_to` are cut to them first); None: all.

    Returns:
        The direction (D,) and {"positives", "negatives", "negative_level", "positive_level"}:
        counts, and each side's mean coordinate along the unit direction.
    """
    pos, neg = codes[positives], codes[negatives]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("no positives or no negatives to compare")
    direction = pos.mean(0) - neg.mean(0)
    info = {"positives": len(pos), "negatives": len(neg)}
    if within is not None:
        direction = direction * within
        orthogonal_to = None if orthogonal_to is None else orthogonal_to * within
    if orthogonal_to is not None:
        direction, info["removed_length"] = orthogonal_part(direction, orthogonal_to)
    unit = direction / direction.norm().clamp_min(1e-12)
    # mean coordinates of each side along the unit direction: where "dark" and "light" lie
    info["negative_level"] = float((neg @ unit).mean())
    info["positive_level"] = float((pos @ unit).mean())
    return direction, info


def confounder_strata(attributes: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """An integer stratum per row from thresholding confounders at 0.5 (missing counts as its own bin)."""
    n = len(next(iter(attributes.values())))
    strata = torch.zeros(n, dtype=torch.long)
    for name in names:
        values = attributes[name]
        bin_ = torch.where(values.isnan(), 2, (values > 0.5).long())
        strata = strata * 3 + bin_
    return strata


# Which confounders each direction is balanced over. Glasses and frame colour are balanced
# over sex and age, since glasses wearers here are mostly older men. In the order they are
# computed: each after the direction that ORTHOGONAL_TO names for it.
BALANCE = {
    "Male": ["Eyeglasses", "Young", "Smiling"],
    "Eyeglasses": ["Male", "Young"],
    "Smiling": ["Male", "Eyeglasses", "Young"],
    "Young": ["Male", "Eyeglasses"],
    "frame_light": ["Male", "Young"],
}
# Directions whose groups also need the decoder to draw the attribute (see `compute_directions`),
# and what both sides' reconstructions must show besides: a frame's colour needs a frame.
SHOWN_IN_RECONSTRUCTION = {"Eyeglasses": (), "frame_light": ("Eyeglasses",)}
# The reconstruction must show it with the classifier confident (p > `confident`) or, where
# fewer than MIN_SHOWN positives are that clear (frame colours: 1 pair in LFW's train split),
# by its plain call (p > 0.5); fewer than that still, and the labels alone decide.
MIN_SHOWN = 20
# Directions from which what is left of another direction after balancing is removed. The
# glasses wearers whose reconstructions show glasses lean female along the Male direction
# even when balanced by the labels (val split, 400 faces, strength 1: the edit turned 32 men
# into women in the classifier's eyes and 3 women into men; once orthogonal, 14 and 17).
# Lighter frames are drawn fainter; once orthogonal to the glasses direction, the frame edit
# leaves glasses on 82% of 40 val faces instead of 73%, and lightens as many.
ORTHOGONAL_TO = {"Eyeglasses": "Male", "frame_light": "Eyeglasses"}
# Directions kept to the code cells over the eyes, where a spatial code has them. A frame's
# colour is a change there only; the whole-face direction also brightened skin and hair. Kept
# to the eyes, the showcase (val, glasses 1.5, spread 2.5) changes the pixels outside the eye
# band by 0.025 on average from start to end instead of 0.126, for the same change across it.
OVER_THE_EYES = ("frame_light",)


def compute_directions(
    codes: torch.Tensor,
    attributes: dict[str, torch.Tensor],
    frame_light: torch.Tensor | None = None,
    shown: dict[str, torch.Tensor] | None = None,
    confident: float = 0.9,
    eye_cells: torch.Tensor | None = None,
    decode: Decoder | None = None,
    eye_rows: slice | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Attribute directions from predicted probabilities (and hand labels of frame colour).

    Args:
        codes: Posterior means (N, D) of the labelled images.
        attributes: name -> probability (N,), NaN where unknown.
        frame_light: 1.0 for light frames, 0.0 for dark, NaN where unlabelled or sunglasses.
        shown: name -> probability (N,) that the reconstruction from each code shows the
            attribute (`vae_demo.evaluate.reconstruction_calls`). For the names in
            SHOWN_IN_RECONSTRUCTION, positives must then also be shown and negatives not
            (and both show the attributes listed there): the direction goes from faces the
            decoder draws without the attribute to faces it draws with it.
        confident: Positives have p > confident, negatives p < 1 - confident.
        eye_cells: Boolean mask (D,) of the code entries over the eyes (`ConvVAE.cells_over`),
            to which the directions in OVER_THE_EYES are cut; None: no cut.
        decode: The model's decoder, codes (B, D) -> pictures (B, C, H, W). Given, each
            direction is scaled to its `decoded_unit`; None: directions keep the length of
            the difference of mean codes.
        eye_rows: The picture rows over the eyes, where the decoded unit of the directions in
            OVER_THE_EYES is measured; None: all rows.

    Returns:
        name -> direction, name -> counts and how it was computed.
    """
    directions, info = {}, defaultdict(dict)
    labels = dict(attributes)
    shown = shown or {}
    if frame_light is not None and (frame_light == 1).any() and (frame_light == 0).any():
        labels["frame_light"] = frame_light
    for name in BALANCE:
        if name not in labels:
            continue
        pos, neg, groups_info = direction_groups(name, labels[name], attributes, shown, confident)
        if len(pos) == 0:
            continue
        other = ORTHOGONAL_TO.get(name)
        away = directions.get(other)
        over_the_eyes = name in OVER_THE_EYES and eye_cells is not None
        directions[name], info[name] = attribute_direction(codes, pos, neg, away, eye_cells if over_the_eyes else None)
        info[name] |= groups_info
        if over_the_eyes:
            info[name]["over_the_eyes"] = int(eye_cells.sum())
        if away is not None:
            info[name]["orthogonal_to"] = other
        if decode is not None:
            rows = eye_rows if name in OVER_THE_EYES and eye_rows is not None else slice(None)
            unit = decoded_unit(decode, codes, directions[name], pos, neg, rows)
            directions[name] = directions[name] * unit
            info[name]["decoded_unit"] = unit
    return directions, dict(info)


def direction_groups(
    name: str,
    p: torch.Tensor,
    attributes: dict[str, torch.Tensor],
    shown: dict[str, torch.Tensor],
    confident: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The rows whose mean codes make `name`'s direction (see `compute_directions`).

    Confident positives and negatives of `p` (N,), balanced over BALANCE[name] and, for the
    names in SHOWN_IN_RECONSTRUCTION, drawn by the decoder as labelled where `shown` allows.

    Returns:
        Indices (P,) of the positives, (P,) of the negatives, and how they were picked.
    """
    positive, negative = p > confident, p < 1 - confident
    balanced_over = [b for b in BALANCE[name] if b in attributes]
    strata = confounder_strata(attributes, balanced_over)
    groups, threshold = None, None
    if name in SHOWN_IN_RECONSTRUCTION and name in shown:
        groups, threshold = shown_groups(positive, negative, strata, name, shown, confident)
    pos, neg = groups or balanced_groups(positive, negative, strata)
    info = {
        "strata": int(strata.unique().numel()),
        "balanced_over": balanced_over,
        "shown_in_reconstruction": groups is not None,
    }
    if threshold is not None:
        info |= {"shown_threshold": threshold, "shown_with": list(SHOWN_IN_RECONSTRUCTION[name])}
    return pos, neg, info


def shown_groups(
    positive: torch.Tensor,
    negative: torch.Tensor,
    strata: torch.Tensor,
    name: str,
    shown: dict[str, torch.Tensor],
    confident: float,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, float | None]:
    """`balanced_groups` of the faces whose reconstructions agree with their labels, and the threshold used.

    Tries the classifier's confident calls first, then its plain calls; returns (None, None)
    when neither gives MIN_SHOWN positives (or `shown` lacks an attribute it needs).
    """
    needs = SHOWN_IN_RECONSTRUCTION[name]
    if any(other not in shown for other in needs):
        return None, None
    drawn = torch.ones(len(positive), dtype=torch.bool)
    for other in needs:
        drawn &= shown[other] > 0.5
    for threshold in (confident, 0.5):
        seen, unseen = shown[name] > threshold, shown[name] < 1 - threshold
        pos, neg = balanced_groups(positive & seen & drawn, negative & unseen & drawn, strata)
        if len(pos) >= MIN_SHOWN:
            return (pos, neg), threshold
    return None, None


@torch.no_grad()
def decoded_unit(
    decode: Decoder,
    codes: torch.Tensor,
    direction: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    rows: slice = slice(None),
    probes: int = 128,
    bounds: tuple[float, float] = (0.25, 4.0),
    batch_size: int = 256,
) -> float:
    """The strength at which `direction` draws, on average, the whole gap between its groups' pictures.

    The gap is the mean reconstruction of the positives minus that of the negatives (within
    `rows`). A linear decoder would draw all of it at strength 1, since the direction is the
    difference of the groups' mean codes. A real decoder draws less: the mean of codes decodes
    to a fainter picture than the mean of the pictures, and more so for a sharper decoder, so
    that strength 1 would mean a weaker edit for a better model. Measured on (up to) `probes`
    negatives: the mean of <decode(z + k d) - decode(z), gap> / <gap, gap> grows with k, and
    bisection finds where it reaches 1, within `bounds`.

    Usage (a decoder that draws only strong codes: half the positives at 4 draw 1.5 on average,
    while the negatives moved by k draw 2k - 1):
        >>> codes = torch.tensor([[0.0], [0.0], [0.0], [4.0]])
        >>> draws_strong_codes = lambda z: torch.relu(z - 1).view(-1, 1, 1, 1)
        >>> decoded_unit(draws_strong_codes, codes, torch.tensor([2.0]), torch.tensor([2, 3]), torch.tensor([0, 1]))
        1.25
    """

    def pictures(z: torch.Tensor) -> torch.Tensor:
        return decode(z).float()[..., rows, :].cpu()

    def mean_picture(group: torch.Tensor) -> torch.Tensor:
        total = sum(pictures(codes[group[i : i + batch_size]]).sum(0) for i in range(0, len(group), batch_size))
        return total / len(group)

    gap = mean_picture(positives) - mean_picture(negatives)
    probe = codes[negatives[torch.linspace(0, len(negatives) - 1, min(probes, len(negatives))).long()]]
    before = pictures(probe)

    def drawn(k: float) -> float:
        change = pictures(probe + k * direction) - before
        return float((change * gap).sum() / len(probe) / gap.pow(2).sum().clamp_min(1e-12))

    low, high = bounds
    if drawn(high) <= 1:
        return high
    if drawn(low) >= 1:
        return low
    for _ in range(12):  # (4 - 0.25) / 2**12: within 0.001
        middle = (low + high) / 2
        low, high = (middle, high) if drawn(middle) < 1 else (low, middle)
    return round((low + high) / 2, 3)


def orthogonal_part(direction: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, float]:
    """`direction` less its component along `other`, and that component's signed length."""
    unit = other / other.norm().clamp_min(1e-12)
    along = direction @ unit
    return direction - along * unit, float(along)


def main(argv: list[str] | None = None) -> int:
    """Recompute a model folder's latent statistics from a data set, in place.

        python -m vae_demo.latent_stats --model runs/default/model --data ../shared/data/lfw

    Or only store the showcase's settings chosen for it (`benchmarks/edit_strengths.py --split val`):

        python -m vae_demo.latent_stats --model runs/default/model --showcase 1.25 3
    """
    import argparse

    from vae_demo.card import update_latent_stats_section
    from vae_demo.classifier import load_local
    from vae_demo.data import load_split
    from vae_demo.evaluate import fit_latent_stats
    from vae_demo.hub import load_model

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder to update")
    parser.add_argument("--data", default="../shared/data/lfw", help="labelled collection (default: LFW)")
    parser.add_argument("--split", default="train", help="split to compute them on (default: train)")
    parser.add_argument(
        "--classifier", default="assets/classifier", help="attribute classifier ('' for none; default: %(default)s)"
    )
    parser.add_argument(
        "--showcase",
        type=float,
        nargs=2,
        metavar=("GLASSES", "SPREAD"),
        help="only store the showcase's glasses strength and dark-light spread for this model",
    )
    args = parser.parse_args(argv)
    model = load_model(args.model)
    if args.showcase:
        stats = model.latent_stats
        if stats is None:
            print(f"error: {args.model} has no latent statistics yet; compute them first", file=sys.stderr)
            return 2
        stats.showcase = {"glasses": args.showcase[0], "spread": args.showcase[1]}
    else:
        data = load_split(args.data, args.split, model.image_size)
        classifier = load_local(args.classifier, "directions from the labels alone", model.device)
        stats = fit_latent_stats(model, data, classifier)
        stats.showcase = model.latent_stats.showcase if model.latent_stats is not None else None
    stats.save(Path(args.model) / LATENT_STATS_FILE)
    update_latent_stats_section(Path(args.model), stats.info, stats.showcase)
    print(json.dumps({"directions": stats.info, "showcase": stats.showcase}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
