"""Measure a model on a whole split: reconstruction quality, likelihood bounds, latent use, samples.

    python -m vae_demo.evaluate --model assets/model --data ../shared/data/lfw --split test --out metrics.json

Reconstructions come from the posterior mean. The negative ELBO uses one posterior sample
per image and a Gaussian decoder whose shared variance is set to its optimum on the val
split (Rybkin et al. 2021), so every model, whatever variance it was trained with, is judged
by the same rule; bits/dim include the log 256 term for 8-bit pixels. The IWAE bound (Burda
et al. 2016) uses the same decoder variance, so it is directly comparable: never above the ELBO.

With an attribute classifier (`vae_demo.classifier`) the command also measures what the app
shows, in the classifier's feature space: random samples against the split's photos (Frechet
distance, precision and recall), attribute edits (do they work, do they change sex), the
evenness of interpolation paths, and how steadily frames lighten along the showcase's paths.
`train.py` calls only the cheap `evaluate`; the rest is `extended_metrics`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vae_demo.classifier import AttributeClassifier, load_local
from vae_demo.data import DataError, FaceData, load_split
from vae_demo.guide import (
    HELD_GLASSES_STRENGTH,
    KEPT,
    OWN_STRENGTH_GRID,
    SEEN,
    Guide,
    held_edit,
    load_guide,
    own_strengths,
)
from vae_demo.images import EYE_BAND, eye_band, uint8_to_float
from vae_demo.latent_stats import LatentStats
from vae_demo.latents import edit, interpolate
from vae_demo.model import HubVAE, WeightsError
from vae_demo.objective import (
    bits_per_dim,
    gaussian_nll_from_squared_error,
    kl_per_dimension,
    kl_to_standard_normal,
    standard_normal_log_prob,
)

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: a unit is active if Var_x(E_q[z_j]) > 0.01
PR_NEIGHBOURS = 3  # Kynkaanniemi et al. 2019: each point's ball reaches its 3rd nearest neighbour
# The samplers measured: the prior, the fitted Gaussian, and the app's default (fitted at 0.8).
SAMPLE_SETTINGS = (("prior", 1.0), ("fitted", 1.0), ("fitted", 0.8))
PATH_STEPS = 16  # codes per interpolation path, endpoints included
MAX_SHOWCASE_PAIRS = 200
EDIT_ABSENT = 0.1  # faces "without" an attribute, for edits that add it: P < 0.1 in the data
GLASSES_CONFIDENT = 0.9
LogDensity = Callable[[torch.Tensor], torch.Tensor]  # codes (M, D) -> log p(z) (M,)
SURE_OF_SEX = 0.4  # faces whose P(Male) in the data is < 0.1 or > 0.9, for sex calls right or wrong


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (B,), in dB, for values in [0, 1]."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (B,) with the usual 11 x 11 Gaussian window (Wang et al. 2004)."""
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum())[None, None]
    channels = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g[..., None, :].expand(channels, 1, 1, window), groups=channels)
        return F.conv2d(t, g[..., :, None].expand(channels, 1, window, 1), groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


@dataclass
class PassResult:
    """Per-image quantities from one pass over a split."""

    psnr: torch.Tensor
    eye_band_psnr: torch.Tensor  # of the rows the eyes and glasses sit in (images.EYE_BAND)
    ssim: torch.Tensor
    mse: torch.Tensor  # of the reconstruction from the mean code
    sampled_squared_error: torch.Tensor  # summed over pixels, reconstruction from z ~ q(z|x)
    mu: torch.Tensor  # the posterior q(z|x) of each image: mean and log-variance
    logvar: torch.Tensor
    dims: int

    @property
    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image, in nats."""
        return kl_to_standard_normal(self.mu, self.logvar)

    def optimal_log_sigma(self) -> float:
        """The shared decoder std that maximises the likelihood of these images."""
        return 0.5 * math.log(self.sampled_squared_error.sum().item() / (len(self.mu) * self.dims))


@torch.no_grad()
def model_pass(model: HubVAE, images: torch.Tensor, batch_size: int = 128, seed: int = 0) -> PassResult:
    """Encode and decode every image (uint8, (N, 3, S, S)) once, with a private RNG."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    band = eye_band(images.shape[-2])
    out = {k: [] for k in ("psnr", "eye_band_psnr", "ssim", "mse", "sampled_squared_error", "mu", "logvar")}
    for start in range(0, len(images), batch_size):
        x = uint8_to_float(images[start : start + batch_size]).to(model.device)
        mu, logvar = model.encode(x)
        recon = model.decode(mu).float()
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        sampled = model.decode(mu + torch.exp(0.5 * logvar) * eps).float()
        out["psnr"].append(psnr(recon, x))
        out["eye_band_psnr"].append(psnr(recon[..., band, :], x[..., band, :]))
        out["ssim"].append(ssim(recon, x))
        out["mse"].append((recon - x).pow(2).flatten(1).mean(1))
        out["sampled_squared_error"].append((sampled - x).pow(2).flatten(1).sum(1).double())
        out["mu"].append(mu.float())
        out["logvar"].append(logvar.float())
    return PassResult(**{k: torch.cat(v).cpu() for k, v in out.items()}, dims=images[0].numel())


def summarize(result: PassResult, log_sigma: float | None = None, stats: LatentStats | None = None) -> dict:
    """The metrics JSON for one pass; log_sigma defaults to this split's own optimum.

    With the model's latent statistics, the negative ELBO is also reported with their fitted
    Gaussian as the prior (the `*_fitted_prior_*` keys; None without them).
    """
    if log_sigma is None:
        log_sigma = result.optimal_log_sigma()
    d = result.dims
    kl = result.kl
    nll = gaussian_nll_from_squared_error(result.sampled_squared_error, d, log_sigma)
    neg_elbo = (nll + kl.double()).mean().item()
    fitted = dict.fromkeys(("kl_fitted_prior_nats", "neg_elbo_fitted_prior_nats", "neg_elbo_fitted_prior_bits_per_dim"))
    if stats is not None:
        kl_fitted = stats.kl(result.mu, result.logvar)
        neg_elbo_fitted = (nll + kl_fitted).mean().item()
        fitted = {
            "kl_fitted_prior_nats": kl_fitted.mean().item(),
            "neg_elbo_fitted_prior_nats": neg_elbo_fitted,
            "neg_elbo_fitted_prior_bits_per_dim": bits_per_dim(neg_elbo_fitted, d),
        }
    return fitted | {
        "psnr": result.psnr.mean().item(),
        "eye_band_psnr": result.eye_band_psnr.mean().item(),
        "ssim": result.ssim.mean().item(),
        "mse": result.mse.mean().item(),
        "neg_elbo_nats": neg_elbo,
        "neg_elbo_bits_per_dim": bits_per_dim(neg_elbo, d),
        "kl_nats": kl.mean().item(),
        "active_units": int((result.mu.var(0) > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": result.mu.shape[1],
        "decoder_log_sigma": log_sigma,
        "n_images": len(result.mu),
    }


def evaluate(
    model: HubVAE, images: torch.Tensor, sigma_images: torch.Tensor | None = None, batch_size: int = 128
) -> dict:
    """Metrics on `images`, with the decoder variance at its optimum on `sigma_images` (or on `images`)."""
    return summarize(*_pass_and_sigma(model, images, sigma_images, batch_size), stats=model.latent_stats)


def _pass_and_sigma(
    model: HubVAE, images: torch.Tensor, sigma_images: torch.Tensor | None, batch_size: int
) -> tuple[PassResult, float | None]:
    """A pass over `images`, and the decoder's log std at its optimum on `sigma_images` (None: theirs)."""
    log_sigma = None if sigma_images is None else model_pass(model, sigma_images, batch_size).optimal_log_sigma()
    return model_pass(model, images, batch_size), log_sigma


# Extended metrics: likelihood bound, latent use, and the classifier's view of the model ----------


def _progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the JSON)."""
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


@torch.no_grad()
def posterior(model: HubVAE, images: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances (N, D) of images (uint8, (N, 3, S, S))."""
    model.eval()
    out = [
        model.encode(uint8_to_float(images[i : i + batch_size]).to(model.device))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat([mu.float() for mu, _ in out]).cpu(), torch.cat([logvar.float() for _, logvar in out]).cpu()


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(q(z_j|x) || N(0, 1)) of each latent dimension j, averaged over images (D,); sums to the KL."""
    return kl_per_dimension(mu.double(), logvar.double()).mean(0)


@torch.no_grad()
def iwae_bound(
    model: HubVAE,
    images: torch.Tensor,
    log_sigma: float,
    k: int,
    batch_size: int = 128,
    seed: int = 0,
    priors: dict[str, LogDensity] | None = None,
) -> dict[str, torch.Tensor]:
    """The importance-weighted bound on log p(x) per image (N,) for each prior, in nats (Burda et al. 2016).

        log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)

    It never exceeds log p(x), tightens as k grows, and for k = 1 is a one-sample ELBO
    estimate. p(x|z) is the Gaussian decoder with the shared std exp(log_sigma). Every prior
    weighs the same samples, so a second prior costs no decoder passes.

    Args:
        model: The VAE.
        images: uint8, (N, 3, S, S).
        log_sigma: The decoder's log std (the negative ELBO's `decoder_log_sigma`).
        k: Importance samples per image.
        batch_size: Images per encoder batch, and codes per decoder batch, so memory stays
            bounded whatever k is.
        seed: Of a private generator: the same seed gives the same bound.
        priors: Name -> log p(z) of codes (M, D); default {"standard": N(0, I)}.

    Returns:
        Name -> the bound per image (N,).
    """
    model.eval()
    priors = priors or {"standard": standard_normal_log_prob}
    generator = torch.Generator().manual_seed(seed)
    dims = images[0].numel()
    bounds = {name: [] for name in priors}
    for start in range(0, len(images), batch_size):
        x = uint8_to_float(images[start : start + batch_size]).to(model.device)
        mu, logvar = (t.float() for t in model.encode(x))
        eps = torch.randn((len(x), k, mu.shape[1]), generator=generator).to(mu.device)
        z = (mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps).flatten(0, 1)  # (B k, D), image-major
        # log q(z|x): (z - mu) / sigma is eps.
        log_q = standard_normal_log_prob(eps.double()) - 0.5 * logvar.double().sum(-1)[:, None]  # (B, k)
        squared_error = []
        for i in range(0, len(z), batch_size):
            rows = torch.arange(i, min(i + batch_size, len(z)), device=x.device) // k
            squared_error.append((model.decode(z[i : i + batch_size]).float() - x[rows]).pow(2).flatten(1).sum(1))
        nll = gaussian_nll_from_squared_error(torch.cat(squared_error).double(), dims, log_sigma).view(len(x), k)
        for name, log_prior in priors.items():
            log_weight = log_prior(z.double().cpu()).view(len(x), k) - log_q.cpu() - nll.cpu()
            bounds[name].append(torch.logsumexp(log_weight, dim=1) - math.log(k))
        _progress(f"IWAE (k={k}): {min(start + batch_size, len(images))}/{len(images)} images")
    return {name: torch.cat(parts) for name, parts in bounds.items()}


@torch.no_grad()
def decode_and_classify(
    model: HubVAE, classifier: AttributeClassifier, z: torch.Tensor, batch_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode codes (N, D) and classify the images: features (N, F), probabilities (N, A)."""
    model.eval()
    parts = [
        classifier.describe(model.decode(z[i : i + batch_size].to(model.device)).float(), batch_size)
        for i in range(0, len(z), batch_size)
    ]
    return torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts])


def reconstruction_calls(
    model: HubVAE, classifier: AttributeClassifier, z: torch.Tensor, batch_size: int = 128
) -> dict[str, torch.Tensor]:
    """What the classifier sees in the pictures decoded from codes (N, D): attribute -> probability (N,)."""
    _, probabilities = decode_and_classify(model, classifier, z, batch_size)
    return dict(zip(classifier.attributes, probabilities.unbind(1), strict=True))


def fit_latent_stats(model: HubVAE, data: FaceData, classifier: AttributeClassifier | None) -> LatentStats:
    """The model's latent statistics on a labelled data set: sampler, directions and their decoded units.

    Without a classifier the directions' groups come from the labels alone (see `compute_directions`).
    """
    # Codes only: `model_pass` would also draw two reconstructions per face and score them,
    # and the classifier's calls below decode the codes once more anyway.
    codes, logvar = posterior(model, data.images)
    shown = None if classifier is None else reconstruction_calls(model, classifier, codes)
    return LatentStats.fit(
        codes,
        data.attributes,
        data.frame_light,
        shown,
        eye_cells=model.cells_over(EYE_BAND),
        decode=lambda z: model.decode(z.to(model.device)),
        eye_rows=eye_band(model.image_size),
        logvar=logvar,
    )


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, F) and (M, F) (Heusel et al. 2017).

        |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

    The symmetric form needs only symmetric eigendecompositions, so no complex round-off
    parts appear (as they do with scipy.linalg.sqrtm of S_a S_b).
    """
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def knn_radii(x: torch.Tensor, k: int = PR_NEIGHBOURS, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of x (N, F) to its k-th nearest other row (N,)."""
    x = x.double()
    # k + 1: the row itself is its own nearest neighbour, at distance 0.
    return torch.cat([torch.cdist(x[i : i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])


def coverage(query: torch.Tensor, reference: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    """Share of query rows inside at least one reference ball (each reference row with its radius)."""
    query, reference = query.double(), reference.double()
    inside = [(torch.cdist(query[i : i + chunk], reference) <= radii[None]).any(1) for i in range(0, len(query), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of generated features against real ones.

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour. Precision: the share of generated samples inside the real manifold (are they
    realistic?). Recall: the share of real samples inside the generated one (is all of the
    data covered?). NaN when a set has k points or fewer.
    """
    if min(len(real), len(fake)) <= k:
        return float("nan"), float("nan")
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dimension; tied values share their average rank."""
    below = (x[..., None, :] < x[..., :, None]).sum(-1)
    tied = (x[..., None, :] == x[..., :, None]).sum(-1)  # includes the value itself
    return below + (tied + 1) / 2


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dimension; NaN where either side is constant."""
    rx, ry = ranks(x).double(), ranks(y).double()
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    return (rx * ry).sum(-1) / (rx.pow(2).sum(-1) * ry.pow(2).sum(-1)).sqrt()


def evenness(features: torch.Tensor) -> torch.Tensor:
    """Largest step over mean step along paths (..., steps, F): 1 when evenly spaced, more when a path jumps."""
    steps = (features[..., 1:, :] - features[..., :-1, :]).double().norm(dim=-1)
    return steps.max(-1).values / steps.mean(-1)


def _summary(values: torch.Tensor) -> dict:
    """Mean and median of the finite values; n counts all, n_undefined the NaNs left out (e.g. constant paths)."""
    finite = values[values.isfinite()].double()
    summary = {"mean": None, "median": None, "n": len(values), "n_undefined": len(values) - len(finite)}
    if len(finite):
        summary |= {"mean": float(finite.mean()), "median": float(finite.quantile(0.5))}
    return summary


def _share(mask: torch.Tensor) -> float | None:
    return float(mask.double().mean()) if len(mask) else None


def sample_metrics(
    model: HubVAE,
    classifier: AttributeClassifier,
    real_features: torch.Tensor,
    n: int,
    seed: int = 0,
    batch_size: int = 128,
) -> dict:
    """Frechet distance, precision and recall of n samples per (sampler, temperature) in SAMPLE_SETTINGS.

    Every setting draws with the same seed, as the app's sampler does. The fitted sampler
    needs the model's latent statistics; without them its entries are None.
    """
    results = {}
    for sampler, temperature in SAMPLE_SETTINGS:
        key = f"{sampler}_t{temperature}"
        stats = model.latent_stats
        if stats is None and sampler == "fitted":
            results[key] = None
            continue
        generator = torch.Generator().manual_seed(seed)
        if stats is None:
            z = torch.randn(n, model.latent_dim, generator=generator) * temperature
        else:
            z = stats.sample(n, sampler, temperature, generator)
        features, _ = decode_and_classify(model, classifier, z, batch_size)
        precision, recall = precision_recall(real_features, features)
        results[key] = {"fd": frechet_distance(real_features, features), "precision": precision, "recall": recall}
        _progress(f"samples {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[key].items()))
    return results


def faces_without(data: FaceData, attribute: str, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of up to n faces, drawn at random (by `seed`), whose P(attribute) < EDIT_ABSENT in the data."""
    rows = torch.nonzero(data.attributes[attribute] < EDIT_ABSENT).flatten()
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n]]


def edit_effect(
    model: HubVAE,
    classifier: AttributeClassifier,
    z: torch.Tensor,
    attribute: str,
    strength: float | torch.Tensor,
    batch_size: int,
    reference: torch.Tensor | None = None,
    male_labels: torch.Tensor | None = None,
    guide: Guide | None = None,
) -> dict:
    """How often an edit along `attribute`'s direction makes the classifier call it, flips sex, keeps glasses.

    A flip counts any change of the male/female call, the classifier undoing its own mistake
    on the unedited reconstruction included; `male_wrong_before` and `male_wrong_after` say
    how often the call contradicts the data, over the faces sure of their sex there.

    Args:
        z: Codes (N, D) of the faces to edit.
        strength: One for all faces, or one per face (N,).
        reference: Classifier probabilities (N, A) of their unedited reconstructions, if
            already computed.
        male_labels: P(Male) in the data (N,), NaN where unknown; without it the
            `male_wrong_*` shares are None.
        guide: The classifier or committee that holds the edit's Male logit (`guide.held_edit`);
            without it the plain edit z + strength * direction.
    """
    names = classifier.attributes
    column = names.index(attribute)
    keys = ("success", "reference_rate", "male_flips", "male_wrong_before", "male_wrong_after")
    if len(z) == 0:
        return dict.fromkeys((*keys, "glasses_before", "glasses_after")) | {"n": 0}
    if reference is None:
        _, reference = decode_and_classify(model, classifier, z, batch_size)
    if guide is None:
        codes = edit(z, model.latent_stats.directions[attribute], strength)
    else:
        codes = held_edit(model, guide, z, {attribute: strength})
    _, edited = decode_and_classify(model, classifier, codes, batch_size)
    flips = wrong_before = wrong_after = glasses_before = glasses_after = None
    if "Male" in names:
        male = names.index("Male")
        flips = _share((edited[:, male] > 0.5) != (reference[:, male] > 0.5))
        if male_labels is not None:
            sure = (male_labels - 0.5).abs() > SURE_OF_SEX  # NaN compares False
            truth = male_labels[sure] > 0.5
            wrong_before = _share((reference[sure, male] > 0.5) != truth)
            wrong_after = _share((edited[sure, male] > 0.5) != truth)
    if "Eyeglasses" in names:  # for frame colour: lighter frames must still be frames
        glasses = names.index("Eyeglasses")
        glasses_before, glasses_after = _share(reference[:, glasses] > 0.5), _share(edited[:, glasses] > 0.5)
    return {
        "n": len(z),
        "success": _share(edited[:, column] > 0.5),
        "reference_rate": _share(reference[:, column] > 0.5),
        "male_flips": flips,
        "male_wrong_before": wrong_before,
        "male_wrong_after": wrong_after,
        "glasses_before": glasses_before,
        "glasses_after": glasses_after,
    }


def dark_framed(
    model: HubVAE,
    classifier: AttributeClassifier,
    data: FaceData,
    mu: torch.Tensor,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The faces a frame-colour edit should lighten: rows, their reconstructions' probabilities, hand-labelled count.

    The hand-labelled dark frames and, since those are few, every confident glasses wearer
    (P > 0.9) whose reconstruction the classifier calls dark.
    """
    nan = torch.full((len(mu),), float("nan"))
    labelled_dark = (nan if data.frame_light is None else data.frame_light) == 0
    wearer = data.attributes.get("Eyeglasses", nan) > GLASSES_CONFIDENT
    candidates = labelled_dark | wearer
    if not candidates.any():
        return candidates.nonzero().flatten(), None, 0
    _, reference = decode_and_classify(model, classifier, mu[candidates], batch_size)
    called_dark = reference[:, classifier.attributes.index("frame_light")] < 0.5
    keep = labelled_dark[candidates] | (wearer[candidates] & called_dark)
    return candidates.nonzero().flatten()[keep], reference[keep], int(labelled_dark.sum())


def edit_metrics(
    model: HubVAE,
    classifier: AttributeClassifier,
    data: FaceData,
    mu: torch.Tensor,
    strength: float,
    batch_size: int = 128,
    guide: Guide | None = None,
) -> dict:
    """Add glasses and a smile to faces without, and lighten dark frames; see `edit_effect`.

    Glasses go on faces with P(Eyeglasses) < 0.1 in the data, a smile on faces with
    P(Smiling) < 0.1, frames are lightened on `dark_framed` faces. With a guide, the glasses
    go on once more as a held edit (`guide.held_edit`) at `HELD_GLASSES_STRENGTH`, under
    "glasses_held", and again with each face at its own strength (`guide.own_strengths`),
    under "glasses_own_strength". A direction or classifier output the model lacks gives None.
    """
    directions = {} if model.latent_stats is None else model.latent_stats.directions
    nan = torch.full((len(mu),), float("nan"))
    results: dict = {"strength": strength}
    for key, attribute in (("glasses", "Eyeglasses"), ("smiling", "Smiling")):
        if attribute not in directions or attribute not in classifier.attributes:
            results[key] = None
            continue
        rows = data.attributes.get(attribute, nan) < EDIT_ABSENT
        male = data.attributes.get("Male", nan)[rows]
        results[key] = edit_effect(model, classifier, mu[rows], attribute, strength, batch_size, male_labels=male)
        if key == "glasses" and guide is not None and KEPT in directions:
            results["glasses_held"] = {"strength": HELD_GLASSES_STRENGTH} | edit_effect(
                model, classifier, mu[rows], attribute, HELD_GLASSES_STRENGTH, batch_size, male_labels=male, guide=guide
            )
            own = own_strengths(model, guide, mu[rows], attribute)
            results["glasses_own_strength"] = {
                "seen": SEEN,
                "mean_strength": own.mean().item() if len(own) else None,
                "at_largest": _share(own == OWN_STRENGTH_GRID[-1]),
            } | edit_effect(model, classifier, mu[rows], attribute, own, batch_size, male_labels=male, guide=guide)
    if "frame_light" not in directions or "frame_light" not in classifier.attributes:
        results["frame_light"] = None
        return results
    rows, reference, n_hand_labelled = dark_framed(model, classifier, data, mu, batch_size)
    male = data.attributes.get("Male", nan)[rows]
    results["frame_light"] = edit_effect(
        model, classifier, mu[rows], "frame_light", strength, batch_size, reference, male_labels=male
    )
    results["frame_light"]["n_hand_labelled"] = n_hand_labelled
    return results


def kept_attribute_metrics(
    model: HubVAE,
    classifier: AttributeClassifier,
    data: FaceData,
    mu: torch.Tensor,
    photo_probabilities: torch.Tensor,
    batch_size: int = 128,
) -> dict:
    """Do reconstructions keep the glasses and their frame colour? The classifier on photos and on reconstructions.

    Glasses: over confident wearers (P(Eyeglasses) > 0.9 in the data), the share of photos
    and of their reconstructions (from the mean code) the classifier calls "glasses".
    Frame colour: over hand-labelled dark and light frames, the share where its dark/light
    call agrees with the label, on the photos and on the reconstructions.
    """
    names, nan = classifier.attributes, torch.full((len(mu),), float("nan"))
    results: dict = {}
    wearers = data.attributes.get("Eyeglasses", nan) > GLASSES_CONFIDENT
    frame = nan if data.frame_light is None else data.frame_light
    labelled = frame.isfinite()
    for key, attribute, rows in (("glasses", "Eyeglasses", wearers), ("frame_light", "frame_light", labelled)):
        if attribute not in names or not rows.any():
            results[key] = None
            continue
        column = names.index(attribute)
        photos = photo_probabilities[rows]
        _, recons = decode_and_classify(model, classifier, mu[rows], batch_size)
        truth = torch.ones(int(rows.sum()), dtype=torch.bool) if key == "glasses" else frame[rows] > 0.5
        results[key] = {
            "n": int(rows.sum()),
            "photos": _share((photos[:, column] > 0.5) == truth),
            "reconstructions": _share((recons[:, column] > 0.5) == truth),
        }
    _progress(f"kept attributes: {json.dumps(results)}")
    return results


def interpolation_metrics(
    model: HubVAE,
    classifier: AttributeClassifier,
    mu: torch.Tensor,
    pairs: int,
    steps: int = PATH_STEPS,
    seed: int = 0,
    batch_size: int = 128,
) -> dict | None:
    """Evenness (see `evenness`) of lerp and slerp paths between random pairs of faces, in feature space."""
    if len(mu) < 2 or pairs <= 0:
        return None
    generator = torch.Generator().manual_seed(seed)
    ends = torch.stack([torch.randperm(len(mu), generator=generator)[:2] for _ in range(pairs)])
    results: dict = {"pairs": pairs, "steps": steps}
    for method in ("lerp", "slerp"):
        paths = torch.stack([interpolate(mu[a], mu[b], steps, method) for a, b in ends.tolist()])
        features, _ = decode_and_classify(model, classifier, paths.flatten(0, 1), batch_size)
        results[method] = _summary(evenness(features.view(pairs, steps, -1)))
        _progress(f"interpolation {method}: evenness {results[method]['mean']:.3f} (mean)")
    return results


def showcase_metrics(
    model: HubVAE,
    classifier: AttributeClassifier,
    data: FaceData,
    mu: torch.Tensor,
    steps: int = PATH_STEPS,
    max_pairs: int = MAX_SHOWCASE_PAIRS,
    seed: int = 0,
    batch_size: int = 128,
    glasses: float | None = None,
    spread: float | None = None,
) -> dict | None:
    """Does the frame lighten steadily along the showcase's paths? Spearman of P(light frames) with t.

    Two modes, as in the app (slerp, its default): morphs between a hand-labelled
    dark-framed and a light-framed face (every such pair, at most `max_pairs`, drawn with
    the seed), and each labelled glasses wearer moved along the frame-colour direction from
    the dark to the light level (`Studio.frame_colour_endpoints`, with the model's own
    `glasses` and `spread` if it holds them, else the app's defaults, unless given). Beside
    the correlation, what a viewer sees: the share of path frames called "glasses", of paths
    that start called dark and of paths that end called light; for the direction mode also
    how much the picture changes in the eye band and elsewhere (`end_to_end_change`).
    """
    if "frame_light" not in classifier.attributes or data.frame_light is None:
        return None
    from vae_demo.studio import Studio  # here: studio imports this module

    column = classifier.attributes.index("frame_light")
    glasses_column = classifier.attributes.index("Eyeglasses") if "Eyeglasses" in classifier.attributes else None
    t = torch.linspace(0, 1, steps)

    def path_metrics(ends: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        if not ends:
            return _summary(torch.empty(0))
        paths = torch.stack([interpolate(a, b, steps, "slerp") for a, b in ends])
        _, probabilities = decode_and_classify(model, classifier, paths.flatten(0, 1), batch_size)
        light = probabilities[:, column].view(len(ends), steps)
        seen = {
            "start_called_dark": _share(light[:, 0] < 0.5),
            "end_called_light": _share(light[:, -1] > 0.5),
            "frames_called_glasses": None if glasses_column is None else _share(probabilities[:, glasses_column] > 0.5),
        }
        return _summary(spearman(light, t.expand(len(ends), -1))) | seen

    dark = torch.nonzero(data.frame_light == 0).flatten().tolist()
    light = torch.nonzero(data.frame_light == 1).flatten().tolist()
    pairs = [(d, li) for d in dark for li in light]
    if len(pairs) > max_pairs:
        chosen = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:max_pairs]
        pairs = [pairs[i] for i in chosen.tolist()]
    results = {"two_photos": path_metrics([(mu[d], mu[li]) for d, li in pairs])}
    if model.latent_stats is None or "frame_light" not in model.latent_stats.directions:
        results["direction"] = None
    else:
        studio = Studio(model, examples=[])
        glasses, spread = studio.showcase_settings(glasses, spread)
        ends = [studio.frame_colour_endpoints(mu[i], spread, glasses) for i in sorted(dark + light)]
        results["direction"] = path_metrics(ends) | end_to_end_change(model, ends, batch_size)
        results["direction"] |= {"glasses": glasses, "spread": spread}
    _progress("showcase: " + ", ".join(f"{k} {v and v['mean']}" for k, v in results.items()))
    return results


@torch.no_grad()
def end_to_end_change(model: HubVAE, ends: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int = 128) -> dict:
    """How much a path's picture changes from its start to its end, across the eye band and elsewhere.

    The mean absolute pixel difference (of [0, 1] values) between the pictures decoded from
    each pair of codes. A change of frame colour belongs in the eye band; what changes
    elsewhere (skin, hair, background) is a side effect.
    """
    if not ends:
        return {"change_in_eye_band": None, "change_elsewhere": None}
    starts, finishes = (torch.stack(side).to(model.device) for side in zip(*ends, strict=True))
    change = torch.cat(
        [
            (model.decode(finishes[i : i + batch_size]) - model.decode(starts[i : i + batch_size])).abs().mean(1)
            for i in range(0, len(starts), batch_size)
        ]
    ).float()
    band = torch.zeros(change.shape[-2], dtype=torch.bool)
    band[eye_band(change.shape[-2])] = True
    return {
        "change_in_eye_band": change[:, band].mean().item(),
        "change_elsewhere": change[:, ~band].mean().item(),
    }


def extended_metrics(
    model: HubVAE,
    data: FaceData,
    classifier: AttributeClassifier | None,
    log_sigma: float,
    iwae_k: int = 64,
    samples: int = 2000,
    pairs: int = 200,
    seed: int = 0,
    batch_size: int = 128,
    codes: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide: Guide | None = None,
) -> dict:
    """The expensive metrics, for `python -m vae_demo.evaluate` (train.py does not run them).

    Args:
        model: The VAE, with its latent statistics for the fitted sampler and the edits.
        data: The split to measure on.
        classifier: Its features and decisions measure samples, edits and paths; without
            one those entries are None.
        log_sigma: The decoder's log std for the IWAE bound: the negative ELBO's.
        iwae_k: Importance samples per image; 0 skips the bound.
        samples: Random faces per sampler setting.
        pairs: Random pairs of faces for the interpolation paths.
        seed: Of every random draw here.
        batch_size: Images (or codes) per forward pass.
        codes: The split's posterior means and log-variances, if already computed.
        guide: The classifier or committee that steers held edits (`vae_demo.guide`); without one
            there are no "glasses_held" and "glasses_own_strength" edits.

    Returns:
        kl_per_dim, neg_iwae_nats, neg_iwae_bits_per_dim (and the same with the fitted prior:
        neg_iwae_fitted_prior_*), iwae_k, n_samples, samples, kept (attributes kept in
        reconstructions), edits, interpolation and showcase.
    """
    from vae_demo.studio import DEFAULT_EDIT_STRENGTH  # here: studio imports this module

    start = time.monotonic()
    mu, logvar = codes if codes is not None else posterior(model, data.images, batch_size)
    metrics: dict = {"kl_per_dim": kl_per_dim(mu, logvar).tolist(), "iwae_k": iwae_k}
    priors = {"standard": standard_normal_log_prob}
    if model.latent_stats is not None:
        priors["fitted_prior"] = model.latent_stats.log_prob
    bounds = iwae_bound(model, data.images, log_sigma, iwae_k, batch_size, seed, priors) if iwae_k > 0 else {}
    dims = data.images[0].numel()
    for name in ("standard", "fitted_prior"):
        neg_iwae = -bounds[name].mean().item() if name in bounds else None
        suffix = "" if name == "standard" else f"_{name}"
        metrics[f"neg_iwae{suffix}_nats"] = neg_iwae
        metrics[f"neg_iwae{suffix}_bits_per_dim"] = None if neg_iwae is None else bits_per_dim(neg_iwae, dims)
    metrics["n_samples"] = samples
    if classifier is None:
        return metrics | dict.fromkeys(("samples", "kept", "edits", "interpolation", "showcase"))
    real_features, real_probabilities = classifier.describe(data.images, batch_size)
    _progress(f"classifier features of {len(data)} photos ({time.monotonic() - start:.0f} s)")
    metrics["samples"] = (
        sample_metrics(model, classifier, real_features, samples, seed, batch_size) if samples else None
    )
    metrics["kept"] = kept_attribute_metrics(model, classifier, data, mu, real_probabilities, batch_size)
    metrics["edits"] = edit_metrics(model, classifier, data, mu, DEFAULT_EDIT_STRENGTH, batch_size, guide)
    _progress(f"edits ({time.monotonic() - start:.0f} s): {json.dumps(metrics['edits'])}")
    metrics["interpolation"] = interpolation_metrics(model, classifier, mu, pairs, PATH_STEPS, seed, batch_size)
    metrics["showcase"] = showcase_metrics(
        model, classifier, data, mu, PATH_STEPS, MAX_SHOWCASE_PAIRS, seed, batch_size
    )
    _progress(f"done ({time.monotonic() - start:.0f} s)")
    return metrics


def plot_kl_per_dim(kl: dict | Sequence[float] | torch.Tensor, path: str | Path) -> Path:
    """A bar chart (PNG) of the KL of each latent dimension, largest first.

    Args:
        kl: A metrics dict with "kl_per_dim", or the values themselves.
        path: Where to write the PNG.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone; imported here
    # because only this function needs matplotlib.
    from matplotlib.figure import Figure

    values = torch.as_tensor(kl["kl_per_dim"] if isinstance(kl, dict) else kl, dtype=torch.float64)
    values = values.sort(descending=True).values
    figure = Figure(figsize=(8, 3), layout="constrained")
    axes = figure.subplots()
    axes.bar(range(len(values)), values.tolist(), width=1.0, color="#4a6fa5")
    axes.set_xlabel("latent dimension (sorted)")
    axes.set_ylabel("KL (nats)")
    axes.set_title(f"KL per latent dimension (total {float(values.sum()):.0f} nats)")
    axes.set_xlim(-0.5, len(values) - 0.5)
    figure.savefig(path, dpi=120)
    return Path(path)


def _jsonable(value):
    """Non-finite floats become None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate a face VAE on a whole split.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default="assets/model", help="model folder or Hub repo id")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--data", default="../shared/data/lfw", help="image collection (LFW, CelebA or folders)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to measure")
    parser.add_argument("--sigma-split", default="val", help="split whose optimum sets the decoder variance")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument("--out", default=None, help="write the metrics JSON here too")
    parser.add_argument("--iwae-k", type=int, default=64, help="importance samples for the IWAE bound (0: skip)")
    parser.add_argument("--classifier", default="assets/classifier", help="attribute classifier folder")
    parser.add_argument(
        "--guide",
        default="assets/guide",
        help="the guide that steers held edits: one classifier, or a folder of several",
    )
    parser.add_argument("--samples", type=int, default=2000, help="random faces per sampler setting")
    parser.add_argument("--pairs", type=int, default=200, help="random pairs of faces for interpolation paths")
    parser.add_argument("--kl-plot", default=None, help="write a PNG of the KL per latent dimension here")
    parser.add_argument("--seed", type=int, default=0, help="of every random draw")
    args = parser.parse_args(argv)

    from vae_demo.hub import load_model  # here, not at the top: hub imports the model registry

    try:
        model = load_model(args.model, revision=args.revision)
        data = load_split(args.data, args.split, model.image_size)
        sigma_images = None
        if args.sigma_split and args.sigma_split != args.split:
            sigma_images = load_split(args.data, args.sigma_split, model.image_size).images
    except (DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classifier = load_local(args.classifier, "skipping samples, edits and paths", model.device)
    _progress(f"{len(data)} {args.split} images; reconstructions and negative ELBO")
    result, log_sigma = _pass_and_sigma(model, data.images, sigma_images, args.batch_size)
    metrics = summarize(result, log_sigma, model.latent_stats)
    metrics |= {"split": args.split, "sigma_split": args.sigma_split if sigma_images is not None else args.split}
    metrics |= extended_metrics(
        model,
        data,
        classifier,
        metrics["decoder_log_sigma"],
        args.iwae_k,
        args.samples,
        args.pairs,
        args.seed,
        args.batch_size,
        codes=(result.mu, result.logvar),
        guide=load_guide(args.guide, "no held edits", model.device) if classifier is not None else None,
    )
    metrics["classifier"] = args.classifier if classifier is not None else None
    if args.kl_plot:
        plot_kl_per_dim(metrics, args.kl_plot)
    text = json.dumps(_jsonable(metrics), indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
