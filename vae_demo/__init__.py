"""vae_demo: a convolutional variational autoencoder for faces, and what to do with its latents."""

import importlib

__all__ = ["ConvVAE", "LatentStats", "WeightsError"]
_HOMES = {"ConvVAE": "vae_demo.model", "LatentStats": "vae_demo.latent_stats", "WeightsError": "vae_demo.model"}


def __getattr__(name: str):
    # Imported on first use, so that `python -m vae_demo.latent_stats` (or any module run as a
    # script) does not find itself already imported by the package and run twice over.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'vae_demo' has no attribute {name!r}")
