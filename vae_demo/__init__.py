"""vae_demo: a convolutional variational autoencoder for faces, and what to do with its latents."""

from vae_demo.latent_stats import LatentStats
from vae_demo.model import ConvVAE, WeightsError

__all__ = ["ConvVAE", "LatentStats", "WeightsError"]
