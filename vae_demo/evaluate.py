"""Measure a model on a whole split: reconstruction quality, likelihood bound, latent use.

    python -m vae_demo.evaluate --model assets/model --data ../shared/data/lfw --split test --out metrics.json

Reconstructions come from the posterior mean. The negative ELBO uses one posterior sample
per image and a Gaussian decoder whose shared variance is set to its optimum on the val
split (Rybkin et al. 2021), so every model, whatever variance it was trained with, is judged
by the same rule; bits/dim include the log 256 term for 8-bit pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vae_demo.data import DataError, load_split
from vae_demo.images import uint8_to_float
from vae_demo.model import HubVAE, WeightsError
from vae_demo.objective import bits_per_dim, gaussian_nll_from_squared_error, kl_to_standard_normal

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: a unit is active if Var_x(E_q[z_j]) > 0.01


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
    ssim: torch.Tensor
    mse: torch.Tensor  # of the reconstruction from the mean code
    sampled_squared_error: torch.Tensor  # summed over pixels, reconstruction from z ~ q(z|x)
    kl: torch.Tensor
    mu: torch.Tensor
    dims: int

    def optimal_log_sigma(self) -> float:
        """The shared decoder std that maximises the likelihood of these images."""
        return 0.5 * math.log(self.sampled_squared_error.sum().item() / (len(self.kl) * self.dims))


@torch.no_grad()
def model_pass(model: HubVAE, images: torch.Tensor, batch_size: int = 128, seed: int = 0) -> PassResult:
    """Encode and decode every image (uint8, (N, 3, S, S)) once, with a private RNG."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    out = {k: [] for k in ("psnr", "ssim", "mse", "sampled_squared_error", "kl", "mu")}
    for start in range(0, len(images), batch_size):
        x = uint8_to_float(images[start : start + batch_size]).to(model.device)
        mu, logvar = model.encode(x)
        recon = model.decode(mu).float()
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        sampled = model.decode(mu + torch.exp(0.5 * logvar) * eps).float()
        out["psnr"].append(psnr(recon, x))
        out["ssim"].append(ssim(recon, x))
        out["mse"].append((recon - x).pow(2).flatten(1).mean(1))
        out["sampled_squared_error"].append((sampled - x).pow(2).flatten(1).sum(1).double())
        out["kl"].append(kl_to_standard_normal(mu.float(), logvar.float()))
        out["mu"].append(mu.float())
    return PassResult(**{k: torch.cat(v).cpu() for k, v in out.items()}, dims=images[0].numel())


def summarize(result: PassResult, log_sigma: float | None = None) -> dict:
    """The metrics JSON for one pass; log_sigma defaults to this split's own optimum."""
    if log_sigma is None:
        log_sigma = result.optimal_log_sigma()
    d = result.dims
    nll = gaussian_nll_from_squared_error(result.sampled_squared_error, d, log_sigma)
    neg_elbo = (nll + result.kl.double()).mean().item()
    return {
        "psnr": result.psnr.mean().item(),
        "ssim": result.ssim.mean().item(),
        "mse": result.mse.mean().item(),
        "neg_elbo_nats": neg_elbo,
        "neg_elbo_bits_per_dim": bits_per_dim(neg_elbo, d),
        "kl_nats": result.kl.mean().item(),
        "active_units": int((result.mu.var(0) > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": result.mu.shape[1],
        "decoder_log_sigma": log_sigma,
        "n_images": len(result.kl),
    }


def evaluate(
    model: HubVAE, images: torch.Tensor, sigma_images: torch.Tensor | None = None, batch_size: int = 128
) -> dict:
    """Metrics on `images`, with the decoder variance at its optimum on `sigma_images` (or on `images`)."""
    log_sigma = None if sigma_images is None else model_pass(model, sigma_images, batch_size).optimal_log_sigma()
    return summarize(model_pass(model, images, batch_size), log_sigma)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate a face VAE on a whole split.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default="assets/model", help="model folder or Hub repo id")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--data", default="../shared/data/lfw", help="image collection (LFW, CelebA or folders)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--sigma-split", default="val", help="split whose optimum sets the decoder variance")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=None, help="write the metrics JSON here too")
    args = parser.parse_args(argv)

    from vae_demo.hub import load_model  # here, not at the top: hub imports the model registry

    try:
        model = load_model(args.model, revision=args.revision)
        images = load_split(args.data, args.split, model.image_size).images
        sigma_images = None
        if args.sigma_split and args.sigma_split != args.split:
            sigma_images = load_split(args.data, args.sigma_split, model.image_size).images
    except (DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics = evaluate(model, images, sigma_images, args.batch_size)
    metrics |= {"split": args.split, "sigma_split": args.sigma_split if sigma_images is not None else args.split}
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
