"""The models people start from, rebuilt so that we can measure ourselves against them.

`SeedMLPVAE` is the seed tutorial's fully connected VAE (as in pytorch/examples vae/main.py):
one 400-unit hidden layer each way, a 20-d latent with a predicted log-variance, Bernoulli
likelihood (summed BCE). Only the input size is adapted: 3 x 128 x 128 pixels instead of 784.

`SeedConvVAE` is the seed tutorial's convolutional VAE: three stride-2 convolutions with
3 -> 8 -> 16 -> 32 channels and BatchNorm, a 1024-unit linear layer, a 100-d latent whose
standard deviation is exp of a linear layer, and summed MSE as reconstruction loss (the
"gaussian_fixed" likelihood). Only the input size is adapted.

Usage:
    >>> import torch
    >>> model = SeedConvVAE(image_size=64)
    >>> [t.shape for t in model.encode(torch.rand(2, 3, 64, 64))]
    [torch.Size([2, 100]), torch.Size([2, 100])]
    >>> SeedMLPVAE(image_size=64).decode(torch.zeros(2, 20)).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vae_demo.model import HubVAE


class SeedConvVAE(HubVAE):
    """The seed tutorial's conv VAE (see the module docstring).

    Args:
        image_size: Side of the square input; must divide by 8.
        latent_dim: Size of the latent code (100 in the tutorial).
        hidden: Width of the linear layer between convolutions and latent (1024).
        likelihood: The tutorial's loss is summed MSE, "gaussian_fixed".
    """

    def __init__(
        self, image_size: int = 128, latent_dim: int = 100, hidden: int = 1024, likelihood: str = "gaussian_fixed"
    ):
        super().__init__()
        self.image_size, self.latent_dim, self.likelihood = image_size, latent_dim, likelihood
        self.bottom_shape = (32, image_size // 8, image_size // 8)
        n_bottom = 32 * (image_size // 8) ** 2
        layers = []
        for c_in, c_out in ((3, 8), (8, 16), (16, 32)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(n_bottom, hidden), nn.ReLU())
        self.to_mu = nn.Linear(hidden, latent_dim)
        self.to_log_std = nn.Linear(hidden, latent_dim)  # std = exp(linear), as in the tutorial
        self.from_latent = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_bottom), nn.ReLU()
        )
        layers = []
        for c_in, c_out in ((32, 16), (16, 8)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.decoder = nn.Sequential(*layers, nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), 2 * self.to_log_std(h)  # log sigma^2 = 2 log sigma

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.from_latent(z).view(-1, *self.bottom_shape)))


class SeedMLPVAE(HubVAE):
    """The seed tutorial's MLP VAE (see the module docstring).

    Args:
        image_size: Side of the square input.
        latent_dim: Size of the latent code (20 in the tutorial).
        hidden: Width of the hidden layer on each side (400).
        likelihood: The tutorial's loss is summed binary cross-entropy, "bernoulli".
    """

    def __init__(self, image_size: int = 128, latent_dim: int = 20, hidden: int = 400, likelihood: str = "bernoulli"):
        super().__init__()
        self.image_size, self.latent_dim, self.likelihood = image_size, latent_dim, likelihood
        pixels = 3 * image_size**2
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc21, self.fc22 = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)  # mu, logvar
        self.fc3, self.fc4 = nn.Linear(latent_dim, hidden), nn.Linear(hidden, pixels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc21(h), self.fc22(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        pixels = torch.sigmoid(self.fc4(F.relu(self.fc3(z))))
        return pixels.view(-1, 3, self.image_size, self.image_size)
