"""A small face-attribute classifier: the measuring instrument for samples, edits and paths.

It predicts Eyeglasses, Male, Smiling, Young (trained on the LFW attribute probabilities as
soft targets) and frame_light (light rather than dark frames, trained on the hand labels
only). Its penultimate activations are the feature space for Frechet distance and
precision/recall in `vae_demo.evaluate`: our own features, not Inception's, so those
figures compare models within this project only.

Train and test it (minutes on two CPU cores):
    python -m vae_demo.classifier --data ../shared/data/lfw --out assets/classifier

Usage:
    >>> clf = AttributeClassifier.from_pretrained("assets/classifier")  # doctest: +SKIP
    >>> probabilities = clf.predict(images)  # images in [0, 1], (B, 3, 128, 128)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from vae_demo.card import write_classifier_card
from vae_demo.images import uint8_to_float

ATTRIBUTES = ("Eyeglasses", "Male", "Smiling", "Young", "frame_light")
# Heads refit on group-balanced features after training (`balance_head`), each with the
# confounder that must not decide it. Most glasses wearers in LFW are men, and the first
# classifier called 77% of the test split's women with glasses "male": every glasses edit
# then seemed to change sex.
BALANCED_HEADS = {"Male": "Eyeglasses"}
BALANCE_BLURS = (0.0, 1.0, 2.0)  # features of sharp and softened photos, as VAE pictures are soft


class AttributeClassifier(nn.Module, PyTorchModelHubMixin, library_name="vae_demo", tags=["faces", "attributes"]):
    """Four stride-2 convolution stages, global average pooling, one linear head per attribute.

    Args:
        attributes: Names of the predicted attributes, in output order.
        channels: Widths of the four stages.
        image_size: Side of the input crops (the VAE's training framing).
    """

    def __init__(
        self,
        attributes: tuple[str, ...] = ATTRIBUTES,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        image_size: int = 128,
    ):
        super().__init__()
        self.attributes, self.image_size = tuple(attributes), image_size
        layers, c_in = [], 3
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(c_in, len(self.attributes)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, channels[-1]) for images in [0, 1]."""
        return self.body((x - 0.5) / 0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, len(attributes))."""
        return self.head(self.features(x))

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Probabilities (B, len(attributes)) for images in [0, 1] or uint8, of any size."""
        return self.describe(x, batch_size)[1]

    def embed(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Features (B, channels[-1]) for images in [0, 1] or uint8, of any size."""
        return self.describe(x, batch_size)[0]

    def describe(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, channels[-1]) and probabilities (B, len(attributes)), from one pass per batch.

        Images are uint8 or float in [0, 1]; those of another size than `image_size` are
        resized to it (antialiased bilinear). Results come back on the CPU.
        """
        features, logits = self._read(x, batch_size)
        return features, torch.sigmoid(logits)

    def logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits (B, len(attributes)), read as `describe` reads images: unbounded, where
        probabilities saturate, for holding a call's strength and not only its side."""
        return self._read(x, batch_size)[1]

    @torch.inference_mode()
    def _read(self, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.eval()
        device = next(self.parameters()).device
        features, logits = [], []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            batch = uint8_to_float(batch) if batch.dtype == torch.uint8 else batch.float()
            if batch.shape[-1] != self.image_size:
                batch = F.interpolate(batch, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
            h = self.features(batch)
            features.append(h.float().cpu())
            logits.append(self.head(h).float().cpu())
        return torch.cat(features), torch.cat(logits)


def load_local(
    folder: str | Path | None, without: str, device: torch.device | str = "cpu"
) -> AttributeClassifier | None:
    """The classifier saved in a local folder, or None with a note on stderr saying what goes `without` it.

    Never a Hub download: the folder is the bundled one or one the user trained.
    """
    if not folder or not Path(folder).is_dir():
        print(f"no classifier folder {folder or '(none given)'}: {without}", file=sys.stderr)
        return None
    with contextlib.redirect_stdout(sys.stderr):  # huggingface_hub's "Loading weights" line; stdout may hold JSON
        return AttributeClassifier.from_pretrained(folder).to(device)


def targets(attributes: dict[str, torch.Tensor], frame_light: torch.Tensor | None, names: tuple[str, ...]):
    """Soft targets (N, A) and a mask of which are known (NaN probabilities and unlabelled frames are not)."""
    columns = [frame_light if name == "frame_light" else attributes[name] for name in names]
    values = torch.stack([c if c is not None else torch.full_like(columns[0], float("nan")) for c in columns], 1)
    known = ~values.isnan()
    return values.nan_to_num(0.0), known


def masked_bce(logits: torch.Tensor, values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged per attribute over its known entries, then over attributes,
    so the rare hand-labelled frame colours weigh as much as the attributes every row has."""
    loss = F.binary_cross_entropy_with_logits(logits, values, reduction="none") * known
    return (loss.sum(0) / known.sum(0).clamp_min(1)).mean()


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = torch.cat([pos, neg]).argsort().argsort().double() + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with std `sigma` pixels, the kernel reaching 3 sigma each side."""
    return gaussian_blur(x, 2 * math.ceil(3 * sigma) + 1, sigma)


def random_blur(x: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Half the batches blurred with one random Gaussian std in [0.3, max_sigma] pixels.

    VAE reconstructions and samples are softer than photos; a classifier trained on sharp
    photos only calls glasses on 3% of wearers' photos blurred with sigma 2 (88% sharp), and
    would then score every VAE's glasses as missing, seen or not.
    """
    if max_sigma <= 0 or torch.rand(()) < 0.5:
        return x
    return blur(x, float(torch.empty(()).uniform_(0.3, max_sigma)))


def photo_features(model: AttributeClassifier, images: torch.Tensor, sigma: float = 0.0, batch_size: int = 256):
    """Features (N, F) of uint8 photos, each blurred with Gaussian std `sigma` pixels first."""
    parts = []
    for start in range(0, len(images), batch_size):  # in batches: a blurred float copy of a whole split is gigabytes
        x = uint8_to_float(images[start : start + batch_size])
        parts.append(model.embed(blur(x, sigma) if sigma else x, batch_size))
    return torch.cat(parts)


def groups(data, attribute: str, confounder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows have both labels (N,), and each row's group 2 * attribute + confounder (N,), thresholds 0.5."""
    a, c = data.attributes[attribute], data.attributes[confounder]
    return a.isfinite() & c.isfinite(), (a > 0.5).long() * 2 + (c > 0.5).long()


def group_names(attribute: str, confounder: str) -> list[str]:
    """Names of the four groups in `groups` order, e.g. "not Male, Eyeglasses"."""
    return [f"{'' if a else 'not '}{attribute}, {'' if c else 'not '}{confounder}" for a in (0, 1) for c in (0, 1)]


def balance_head(
    model: AttributeClassifier,
    data,
    attribute: str,
    confounder: str,
    blur_sigmas: tuple[float, ...] = BALANCE_BLURS,
    weight_decay: float = 1e-3,
) -> dict:
    """Refit one attribute's logit on frozen features, every (attribute, confounder) group weighing the same.

    Deep feature reweighting (Kirichenko, Izmailov & Wilson 2023, "Last Layer Re-Training is
    Sufficient for Robustness to Spurious Correlations"): the features already tell the
    attribute apart; the head had also leaned on the confounder because the two go together
    in the training photos. Only the head's row changes, so the features, and every Frechet
    distance measured in them, stay as they were.

    Args:
        data: Labelled photos (the train split).
        blur_sigmas: The photos' features are taken sharp and blurred by each std (pixels).
        weight_decay: L2 penalty on the refit weights (chosen on the val split's worst group).

    Returns:
        The number of photos in each group.
    """
    known, group = groups(data, attribute, confounder)
    counts = torch.bincount(group[known], minlength=4)
    if (counts == 0).any():
        raise ValueError(f"cannot balance {attribute} over {confounder}: a group is empty ({counts.tolist()})")
    features = torch.cat([photo_features(model, data.images, sigma) for sigma in blur_sigmas])
    repeats = len(blur_sigmas)
    target = data.attributes[attribute].nan_to_num(0.0).repeat(repeats)
    weight = (known / counts[group]).repeat(repeats)
    weight = weight / weight.sum()

    linear, row = model.head[-1], model.attributes.index(attribute)
    w = linear.weight[row].detach().clone().requires_grad_()
    b = linear.bias[row].detach().clone().requires_grad_()
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(features @ w + b, target, reduction="none")
        loss = (loss * weight).sum() + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        linear.weight[row], linear.bias[row] = w, b
    return dict(zip(group_names(attribute, confounder), counts.tolist(), strict=True))


def report(model: AttributeClassifier, data, blur_sigma: float = 0.0) -> dict:
    """Accuracy and AUC per attribute on confident labels (p > 0.5 as positive; frames: hand labels).

    With `blur_sigma`, on the images blurred with that Gaussian std (pixels): how the
    classifier fares on pictures as soft as a VAE's. Balanced heads also get their accuracy
    in each (attribute, confounder) group and the worst of these.
    """
    images = uint8_to_float(data.images)
    if blur_sigma:
        images = blur(images, blur_sigma)
    probabilities = model.predict(images)
    values, known = targets(data.attributes, data.frame_light, model.attributes)
    result = {}
    for i, name in enumerate(model.attributes):
        mask = known[:, i]
        labels = values[mask, i] > 0.5
        scores = probabilities[mask, i]
        result[name] = {
            "accuracy": float(((scores > 0.5) == labels).double().mean()) if mask.any() else float("nan"),
            "auc": auc(scores, labels),
            "n": int(mask.sum()),
        }
        if name in BALANCED_HEADS and BALANCED_HEADS[name] in data.attributes:
            both, group = groups(data, name, BALANCED_HEADS[name])
            correct = (probabilities[:, i] > 0.5) == (data.attributes[name] > 0.5)
            members = [both & (group == k) for k in range(4)]
            by_group = {
                label: float(correct[rows].double().mean()) if rows.any() else None
                for label, rows in zip(group_names(name, BALANCED_HEADS[name]), members, strict=True)
            }
            result[name]["groups"] = by_group
            result[name]["worst_group"] = min((v for v in by_group.values() if v is not None), default=None)
    return result


def main(argv: list[str] | None = None) -> int:
    from vae_demo.data import DataError, load_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/lfw", help="LFW-layout collection (default: %(default)s)")
    parser.add_argument("--out", default="assets/classifier", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="passes over the train split (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, data order and blur (default: %(default)s)")
    parser.add_argument(
        "--channels",
        type=int,
        nargs=4,
        default=(16, 32, 64, 128),
        help="widths of the four stages; the last is the feature size (default: %(default)s)",
    )
    parser.add_argument(
        "--max-blur", type=float, default=2.5, help="largest augmentation blur, pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--balance-only",
        action="store_true",
        help="do not train: refit the balanced heads of the classifier in --out, keeping its features",
    )
    args = parser.parse_args(argv)
    try:
        train, val, test = (load_split(args.data, split, 128) for split in ("train", "val", "test"))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    torch.manual_seed(args.seed)
    if args.balance_only:
        if not (Path(args.out) / "config.json").is_file():
            print(f"error: --balance-only needs a trained classifier in {args.out}", file=sys.stderr)
            return 1
        model = AttributeClassifier.from_pretrained(args.out)
    else:
        model = train_classifier(train, val, args)
    for attribute, confounder in BALANCED_HEADS.items():
        try:
            counts = balance_head(model, train, attribute, confounder)
        except ValueError as error:  # a small collection may lack, say, women with glasses
            print(f"note: {error}; {attribute} head left as trained", file=sys.stderr)
            continue
        print(f"{attribute} head refit over {confounder}, groups weighted equally: {counts}", flush=True)
    metrics = {"val": report(model, val), "test": report(model, test), "test_blur2": report(model, test, 2.0)}
    model.save_pretrained(args.out)
    write_classifier_card(Path(args.out), model, metrics, settings=vars(args))
    print(json.dumps(metrics["test"], indent=2))
    return 0


def train_classifier(train, val, args: argparse.Namespace) -> AttributeClassifier:
    """All weights from scratch on the train split; the epoch with the best mean val AUC is kept."""
    model = AttributeClassifier(channels=tuple(args.channels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    values, known = targets(train.attributes, train.frame_light, model.attributes)
    steps = args.epochs * (len(train) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps)
    best, best_state = -1.0, None
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            idx = order[start : start + args.batch_size]
            x = uint8_to_float(train.images[idx])
            x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)
            x = random_blur(x, args.max_blur)
            loss = masked_bce(model(x), values[idx], known[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        scores = report(model, val)
        aucs = torch.tensor([s["auc"] for s in scores.values()])
        mean_auc = float(aucs.nanmean()) if not aucs.isnan().all() else 0.0
        print(
            f"epoch {epoch + 1}: loss {loss.item():.3f}, val AUC "
            + ", ".join(f"{k} {v['auc']:.3f}" for k, v in scores.items()),
            flush=True,
        )
        if mean_auc > best:
            best, best_state = mean_auc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model


if __name__ == "__main__":
    sys.exit(main())
