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
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from vae_demo.images import uint8_to_float

ATTRIBUTES = ("Eyeglasses", "Male", "Smiling", "Young", "frame_light")


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

    @torch.inference_mode()
    def describe(self, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, channels[-1]) and probabilities (B, len(attributes)), from one pass per batch.

        Images are uint8 or float in [0, 1]; those of another size than `image_size` are
        resized to it (antialiased bilinear). Results come back on the CPU.
        """
        self.eval()
        device = next(self.parameters()).device
        features, probabilities = [], []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            batch = uint8_to_float(batch) if batch.dtype == torch.uint8 else batch.float()
            if batch.shape[-1] != self.image_size:
                batch = F.interpolate(batch, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
            h = self.features(batch)
            features.append(h.float().cpu())
            probabilities.append(torch.sigmoid(self.head(h)).float().cpu())
        return torch.cat(features), torch.cat(probabilities)


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


def report(model: AttributeClassifier, data, blur_sigma: float = 0.0) -> dict:
    """Accuracy and AUC per attribute on confident labels (p > 0.5 as positive; frames: hand labels).

    With `blur_sigma`, on the images blurred with that Gaussian std (pixels): how the
    classifier fares on pictures as soft as a VAE's.
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
    return result


def main(argv: list[str] | None = None) -> int:
    from vae_demo.data import DataError, load_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/lfw", help="LFW-layout collection (default: %(default)s)")
    parser.add_argument("--out", default="assets/classifier", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="passes over the train split (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument(
        "--max-blur", type=float, default=2.5, help="largest augmentation blur, pixels (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        train, val, test = (load_split(args.data, split, 128) for split in ("train", "val", "test"))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    torch.manual_seed(args.seed)
    model = AttributeClassifier()
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
    metrics = {"val": report(model, val), "test": report(model, test), "test_blur2": report(model, test, 2.0)}
    model.save_pretrained(args.out)
    (Path(args.out) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics["test"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
