"""The VAE objective: the negative evidence lower bound (ELBO), term by term.

    -ELBO(x) = E_q(z|x)[-log p(x|z)]  +  KL(q(z|x) || N(0, I))
               reconstruction            regulariser (closed form)

Training is against N(0, I). Afterwards the model's prior can be the Gaussian fitted to its
codes (`kl_to_gaussian`; `LatentStats` in latent_stats.py), which bounds log p(x) more tightly.

The expectation is estimated with one reparameterised sample z = mu + sigma * eps, so its
gradient flows into the encoder. Every term is summed over pixels (or latent dimensions)
and averaged over the batch, so numbers are nats per image.

Decoder likelihoods p(x|z), with D = C * H * W pixel values x in [0, 1] and mean x_hat:
- "gaussian_fixed": N(x_hat, sigma^2) with sigma^2 = 1/2 fixed, i.e. summed MSE + const.
- "gaussian_learned": a calibrated decoder with one shared sigma learned by gradient descent.
- "gaussian_optimal": a calibrated decoder with sigma^2 set to its optimum for the batch, the
  mean squared error (Rybkin et al. 2021, "Simple and Effective VAE Training with
  Calibrated Decoders", Sec. 4), so the balance between the two terms needs no tuning.
- "bernoulli": binary cross-entropy, as in pytorch/examples' MNIST VAE.

Usage:
    >>> import torch
    >>> x = torch.rand(4, 3, 8, 8)
    >>> terms = negative_elbo(x, x_hat=x.clamp(0.1, 0.9), mu=torch.zeros(4, 2),
    ...                       logvar=torch.zeros(4, 2), likelihood="gaussian_optimal")
    >>> terms.kl.item()
    0.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

LOG_256 = math.log(256.0)
LOG_2PI = math.log(2 * math.pi)
FIXED_LOG_SIGMA = math.log(math.sqrt(0.5))  # sigma^2 = 1/2: the NLL is the summed MSE plus a constant


class ElboTerms(NamedTuple):
    """Batch means, in nats per image. `loss` is what the optimiser minimises."""

    loss: torch.Tensor  # reconstruction_nll + beta * kl
    reconstruction_nll: torch.Tensor  # E_q[-log p(x|z)]
    kl: torch.Tensor  # KL(q(z|x) || p(z)), always >= 0
    log_sigma: torch.Tensor  # the decoder's log std used (0 for Bernoulli)

    @property
    def negative_elbo(self) -> torch.Tensor:
        return self.reconstruction_nll + self.kl


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_j, exp(logvar_j)) || N(0, 1)) of each latent dimension j, shape (B, D).

    Closed form from Kingma & Welling 2014, Appendix B:
        -KL_j = 1/2 * (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)
    """
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, shape (B,): the sum over dimensions."""
    return kl_per_dimension(mu, logvar).sum(dim=1)


def kl_to_gaussian(
    mu: torch.Tensor, logvar: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(mean, L L^T)) per example, shape (B,): a learned Gaussian prior.

    Closed form, with S = L L^T and sigma^2 = exp(logvar):
        KL = 1/2 * (tr(S^-1 diag sigma^2) + (mean - mu)^T S^-1 (mean - mu) - D + log det S - sum log sigma^2)
    With mean 0 and L = I it is `kl_to_standard_normal`.

    Args:
        mu, logvar: Posterior parameters, (B, D).
        mean: The prior's mean, (D,).
        scale_tril: Its covariance's lower Cholesky factor L, (D, D).
    """
    dims = mu.shape[1]
    inverse = torch.linalg.solve_triangular(scale_tril, torch.eye(dims, dtype=scale_tril.dtype), upper=False)
    trace = logvar.exp() @ inverse.pow(2).sum(0)  # diag(S^-1)_j = sum_i (L^-1)_ij^2
    mahalanobis = ((mu - mean) @ inverse.T).pow(2).sum(1)  # |L^-1 (mu - mean)|^2
    log_det = 2 * scale_tril.diagonal().log().sum()
    return 0.5 * (trace + mahalanobis - dims + log_det - logvar.sum(1))


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per row, shape (M,)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, L L^T) per row, shape (M,)."""
    whitened = torch.linalg.solve_triangular(scale_tril, (z - mean).T, upper=False).T  # L^-1 (z - mean)
    return standard_normal_log_prob(whitened) - scale_tril.diagonal().log().sum()


def gaussian_nll(
    x: torch.Tensor, x_hat: torch.Tensor, log_sigma: torch.Tensor, precision: torch.Tensor | None = None
) -> torch.Tensor:
    """-log N(x; x_hat, sigma^2 / precision) per example, shape (B,).

    One sigma is shared by all pixels; `precision` (H, W), with mean 1, optionally makes some
    pixels count more than others (see `eye_precision`). Without it every pixel has variance
    sigma^2.
    """
    squared_error = (x - x_hat).pow(2)
    if precision is None:
        return gaussian_nll_from_squared_error(squared_error.flatten(1).sum(1), x[0].numel(), log_sigma)
    weighted = (squared_error * precision).flatten(1).sum(1)
    # Each pixel's variance is sigma^2 / precision: its log-density gains log(precision) / 2.
    log_precision = x.shape[1] * torch.log(precision).sum()
    return gaussian_nll_from_squared_error(weighted, x[0].numel(), log_sigma) - 0.5 * log_precision


def gaussian_nll_from_squared_error(squared_error: torch.Tensor, dims: int, log_sigma) -> torch.Tensor:
    """-log N with one shared sigma, from each example's squared error summed over its `dims` values."""
    log_sigma = torch.as_tensor(log_sigma, dtype=squared_error.dtype)
    return squared_error / (2 * torch.exp(2 * log_sigma)) + dims * (log_sigma + 0.5 * LOG_2PI)


def optimal_log_sigma(x: torch.Tensor, x_hat: torch.Tensor, precision: torch.Tensor | None = None) -> torch.Tensor:
    """The shared sigma that maximises the Gaussian likelihood: sigma^2 = (precision-weighted) MSE."""
    squared_error = (x - x_hat).pow(2)
    if precision is not None:
        squared_error = squared_error * precision
    return 0.5 * torch.log(squared_error.mean().clamp_min(1e-8))


def eye_precision(size: int, weight: float, eye_y: float, width: float = 0.09) -> torch.Tensor:
    """A (size, size) precision map with mean 1 whose band across the eyes counts up to `weight` times more.

    Faces are aligned, so the eyes (and the glasses, this demo's subject) sit in a horizontal
    band at `eye_y` of the height: a Gaussian of standard deviation `width` (of the height)
    across it, over the middle 70% of the width, raises the precision smoothly.
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    rows = torch.exp(-0.5 * ((coords - eye_y) / width) ** 2)
    columns = torch.sigmoid((coords - 0.15) / 0.03) * torch.sigmoid((0.85 - coords) / 0.03)
    precision = 1 + (weight - 1) * rows[:, None] * columns[None, :]
    return precision / precision.mean()


def reconstruction_nll(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    likelihood: str,
    log_sigma: torch.Tensor | None = None,
    precision: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p(x|z) per example (B,), and the log sigma it used.

    For "gaussian_optimal" the optimum sigma is detached: it is a statistic of the batch,
    not a path for gradients (Rybkin et al. 2021, Sec. 4). `precision` weights the pixels of
    the Gaussian likelihoods (see `gaussian_nll`).
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)
        return nll, x_hat.new_zeros(())
    if likelihood == "gaussian_optimal":
        log_sigma = optimal_log_sigma(x, x_hat, precision).detach()
    elif likelihood == "gaussian_fixed":
        log_sigma = x.new_tensor(FIXED_LOG_SIGMA)
    elif log_sigma is None:
        raise ValueError(f"likelihood {likelihood!r} needs the decoder's log_sigma")
    return gaussian_nll(x, x_hat, log_sigma, precision), log_sigma


def negative_elbo(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    likelihood: str,
    log_sigma: torch.Tensor | None = None,
    beta: float = 1.0,
    precision: torch.Tensor | None = None,
) -> ElboTerms:
    """The training loss: E_q[-log p(x|z)] + beta * KL, as batch means in nats per image.

    Args:
        x: Targets in [0, 1], (B, C, H, W).
        x_hat: Decoder mean for a reparameterised sample z ~ q(z|x), same shape.
        mu, logvar: Posterior parameters, (B, latent_dim).
        likelihood: One of vae_demo.model.LIKELIHOODS.
        log_sigma: The decoder's shared log std, for "gaussian_learned".
        beta: Weight of the KL term (beta = 1 is the ELBO; warm-up ramps it from 0).
        precision: Optional (H, W) per-pixel precision, mean 1, for the Gaussian likelihoods.
    """
    nll, used_log_sigma = reconstruction_nll(x.float(), x_hat.float(), likelihood, log_sigma, precision)
    kl = kl_to_standard_normal(mu.float(), logvar.float())
    return ElboTerms(
        loss=(nll + beta * kl).mean(),
        reconstruction_nll=nll.mean(),
        kl=kl.mean(),
        log_sigma=used_log_sigma,
    )


def kl_warmup(step: int, warmup_steps: int, beta: float = 1.0) -> float:
    """Linear KL warm-up (Sonderby et al. 2016): beta grows from 0 to `beta` over warmup_steps."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """Nats per image -> bits per dimension for 8-bit pixels.

    A density on [0, 1] becomes a probability of one of 256 bins of width 1/256 by adding
    log 256 per dimension: -log P(bin) ~= -log p(x) + log 256.
    """
    return (nats_per_image / dims + LOG_256) / math.log(2)
