"""A small patch discriminator, for an adversarial term on reconstructions (train.py --adv-weight).

The Gaussian likelihood pays for a thin frame drawn a pixel off as much as for one not drawn
at all, so the decoder hedges with a faint smear. A discriminator that judges small patches
(pix2pix's PatchGAN, Isola et al. 2017; as in VQGAN, Esser et al. 2021, on an autoencoder's
reconstructions) prefers sharp edges that look like the photos' over faint ones. The term is
added to the training loss only: the ELBO that is logged, selected on and evaluated stays the
ELBO.

Usage:
    >>> import torch
    >>> critic = PatchDiscriminator()
    >>> critic(torch.rand(2, 3, 128, 128)).shape  # one logit per patch, on a 16 x 16 grid
    torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Stride-2 convolutions down to a grid of logits, "real photo" (> 0) or "reconstruction" (< 0).

    Spectral normalisation keeps the discriminator smooth (Miyato et al. 2018), so that its
    gradients stay a usable signal for the decoder without a tuned schedule.

    Args:
        in_channels: Image channels.
        channels: Widths of the stride-2 layers; each halves the side, so three of them judge
            patches on a grid an eighth of the image's side (each logit sees about 40 pixels).
    """

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [spectral_norm(nn.Conv2d(width, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            width = out
        layers.append(spectral_norm(nn.Conv2d(width, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> patch logits (B, 1, H / 2^L, W / 2^L)."""
        return self.net(2 * x - 1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017): push real patches above +1 and reconstructed ones below -1."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """What the decoder minimises: minus the discriminator's mean logit on its reconstructions."""
    return -fake_logits.mean()
