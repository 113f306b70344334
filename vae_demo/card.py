"""The model card (README.md of a model folder): data, settings and measured metrics.

The metrics are also written to metrics.json beside it, for the app's About tab.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from vae_demo.images import EYE_Y
from vae_demo.model import HubVAE, count_parameters

METRICS_FILE = "metrics.json"
ROWS = (
    ("psnr", "PSNR (dB, higher is better)", "{:.2f}"),
    ("eye_band_psnr", "PSNR of the eye band (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("mse", "MSE", "{:.5f}"),
    ("neg_elbo_bits_per_dim", "negative ELBO (bits/dim, 8-bit)", "{:.3f}"),
    ("kl_nats", "KL (nats)", "{:.0f}"),
    ("neg_elbo_fitted_prior_bits_per_dim", "negative ELBO with the learned prior (bits/dim)", "{:.3f}"),
    ("kl_fitted_prior_nats", "KL to the learned prior (nats)", "{:.0f}"),
    ("active_units", "active units", "{}"),
    ("n_images", "images", "{}"),
)


def latent_stats_section(info: dict[str, dict], showcase: dict[str, float] | None = None) -> str:
    """The card's "Latent statistics" section, from `LatentStats.info` (name -> how it was computed)
    and `LatentStats.showcase` (the showcase's settings for this model, if chosen)."""
    lines = []
    for name, how in info.items():
        line = f"- `{name}`: {how['positives']} positives vs {how['negatives']} negatives, "
        line += f"balanced over {', '.join(how.get('balanced_over', [])) or 'nothing'}"
        if how.get("shown_in_reconstruction"):
            line += "; only faces whose reconstructions agree with the label (attribute classifier"
            line += f", p > {how['shown_threshold']:g})" if "shown_threshold" in how else ")"
            if how.get("shown_with"):
                line += f" and show {', '.join(how['shown_with'])}"
        if how.get("over_the_eyes"):
            line += f"; kept to the {how['over_the_eyes']} code entries over the eyes"
        if how.get("orthogonal_to"):
            line += f"; made orthogonal to {how['orthogonal_to']}"
        if how.get("decoded_unit"):
            line += f"; scaled by {how['decoded_unit']:g}, so that strength 1 draws the groups' whole difference"
            line += " in pictures"
        lines.append(line)
    return f"""## Latent statistics
`latent_stats.safetensors`: mean and covariance of the training codes (the learned prior,
which the "fitted" sampler draws from)
and attribute directions (difference of mean codes of confident positives and negatives):

{chr(10).join(lines) or "- none"}
{_showcase_line(showcase)}"""


def _showcase_line(showcase: dict[str, float] | None) -> str:
    if showcase is None:
        return ""
    return (
        f"\nThe showcase adds the glasses direction at strength {showcase['glasses']:g} and spreads the dark and"
        f" light frame levels {showcase['spread']:g} times apart (chosen on the validation split).\n"
    )


def update_latent_stats_section(folder: Path, info: dict[str, dict], showcase: dict[str, float] | None = None) -> None:
    """Rewrite the "Latent statistics" section of a model folder's card, if it has one."""
    card = folder / "README.md"
    if not card.is_file() or "## Latent statistics" not in (text := card.read_text()):
        return
    start = text.index("## Latent statistics")
    end = text.find("\n## ", start + 1)
    card.write_text(text[:start] + latent_stats_section(info, showcase) + (text[end:] if end >= 0 else ""))


def _selection(cfg: dict, state: dict) -> str:
    if cfg.get("keep", "best") == "last":
        return f"The weights at the end of training (epoch {state['epoch']}), not selected by the validation split"
    best = state.get("best") or {}
    return f"Selected by the validation split (epoch {best.get('epoch', '?')} of {state['epoch']})"


def write_model_card(folder: Path, model: HubVAE, cfg: dict, metrics: dict, state: dict, n_train: int) -> None:
    """Write README.md (with Hub front matter) and metrics.json into a saved model folder."""
    splits = list(metrics)
    table = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key, label, fmt in ROWS:
        values = [metrics[s].get(key) for s in splits]
        table.append(f"| {label} | " + " | ".join("–" if v is None else fmt.format(v) for v in values) + " |")
    stats = model.latent_stats
    stats_section = latent_stats_section(stats.info, stats.showcase) if stats is not None else latent_stats_section({})
    resumed = "".join(f"\nResumed {change}." for change in state.get("changes", []))
    if cfg.get("init_from"):
        resumed = f" It started from the weights of `{cfg['init_from']}`, whose training is not counted here.{resumed}"
    config = json.dumps(model.config, indent=2, sort_keys=True)
    settings = json.dumps({k: v for k, v in cfg.items() if k != "push_to_hub"}, indent=2)
    text = f"""---
library_name: vae_demo
license: mit
tags:
- vae
- faces
- image-generation
- pytorch_model_hub_mixin
---

# Face VAE ({model.config["architecture"]}, {model.image_size} x {model.image_size})

A variational autoencoder for face photos, trained with the `train.py` of vae_demo (Face
VAE Studio). Load it with:

```python
from vae_demo.hub import load_model

model = load_model("path/or/repo-id")
mu, logvar = model.encode(images)  # images: float in [0, 1], (B, 3, {model.image_size}, {model.image_size})
faces = model.decode(mu)
```

## Data
`{cfg["data"]}`: {n_train} training images, cropped to the training framing (eyes at {EYE_Y:.0%} of
the height). {_selection(cfg, state)}, reported on the test split, which played no part in
training or selection.
Training took {state["train_seconds"] / 60:.1f} minutes on {", then ".join(state.get("hardware", [])) or "?"} for \
{state["step"]} steps.{resumed}

## Metrics
Reconstructions from the posterior mean; the negative ELBO uses one posterior sample per
image and the decoder variance set to its optimum on the validation split.

{chr(10).join(table)}

{count_parameters(model):,} parameters.

{stats_section}
## Model config
```json
{config}
```

## Training settings
```json
{settings}
```
"""
    _write(folder, text, metrics)


def _write(folder: Path, card: str, metrics: dict) -> None:
    (folder / "README.md").write_text(card)
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")


def write_classifier_card(folder: Path, model: nn.Module, metrics: dict, settings: dict) -> None:
    """Write README.md (with Hub front matter) for a saved attribute classifier folder.

    Args:
        folder: Where `save_pretrained` put the classifier; its metrics.json is written beside.
        model: The `AttributeClassifier` (typed as a module: `vae_demo.classifier` imports this one).
        metrics: `{"val": report, "test": report, "test_blur2": report}`, as `classifier.report` makes them.
        settings: The training command's arguments, for the reader who wants to train it again.
    """
    names = list(model.attributes)
    rows = [
        "| attribute | test AUC | test accuracy | test AUC, photos blurred by 2 px | val AUC | test photos |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        test, val = metrics["test"][name], metrics["val"][name]
        blurred = metrics["test_blur2"][name]["auc"]
        rows.append(
            f"| {name} | {test['auc']:.3f} | {test['accuracy']:.3f} | {blurred:.3f} | {val['auc']:.3f} | {test['n']} |"
        )
    group_lines = []
    for name in names:
        groups = metrics["test"][name].get("groups")  # only balanced heads have them
        if groups is None:
            continue
        group_lines += [
            f"\n`{name}` called right in each group of the test split (its head refit with the groups weighing"
            " the same, deep feature reweighting; Kirichenko, Izmailov & Wilson 2023):\n",
            "| " + " | ".join(groups) + " |",
            "|" + "---|" * len(groups),
            "| " + " | ".join("–" if v is None else f"{v:.0%}" for v in groups.values()) + " |",
        ]
    size = model.image_size
    text = f"""---
library_name: vae_demo
license: mit
tags:
- faces
- attributes
- pytorch_model_hub_mixin
---

# Face attribute classifier ({size} x {size})

A small convolutional network from vae_demo (Face VAE Studio) that reads {", ".join(names)}
from an aligned face crop. vae_demo measures its VAEs' samples, edits and interpolation paths
with it, and a committee of twins, each trained with a seed of its own, steers the held
edits. Its penultimate activations ({model.head[-1].in_features} numbers) are the feature
space for the evaluation's Frechet distance and precision/recall: our own features, not Inception's, so those figures
compare models within vae_demo only.

```python
from vae_demo.classifier import AttributeClassifier

clf = AttributeClassifier.from_pretrained("path/or/repo-id")
probabilities = clf.predict(images)  # uint8 or float in [0, 1], (B, 3, {size}, {size}); one column per attribute
```

## Data
The train split of `{settings["data"]}`. The attribute probabilities are soft targets.
`frame_light` (light rather than dark frames) is trained on the hand labels only. Photos are
flipped and blurred at random (up to {settings["max_blur"]} px), because VAE pictures
are soft. The epoch with the best mean val AUC is kept.

## Metrics
Confident labels only (probability > 0.5 is positive; frames: the hand labels).

{chr(10).join(rows)}
{chr(10).join(group_lines)}

{count_parameters(model):,} parameters.

## Training settings
{_refit_note(settings)}`python -m vae_demo.classifier` with:
```json
{json.dumps(settings, indent=2)}
```
"""
    _write(folder, text, metrics)


def _refit_note(settings: dict) -> str:
    if not settings.get("balance_only"):
        return ""
    return (
        "The last run refit the balanced heads only (`--balance-only`), on the features of the classifier"
        " already in this folder: it was trained by an earlier run, whose settings may differ from those below.\n\n"
    )
