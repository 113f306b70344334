"""Weights in and out: load any of our model folders (local or on the Hub), publish one.

Usage:
    >>> model = load_model("assets/model")  # doctest: +SKIP
    >>> publish("runs/default/model", "me/face-vae")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download

from vae_demo.baselines import SeedConvVAE
from vae_demo.model import CONFIG_FILE, ConvVAE, HubVAE, WeightsError

ARCHITECTURES: dict[str, type[HubVAE]] = {"ConvVAE": ConvVAE, "SeedConvVAE": SeedConvVAE}


class PublishError(RuntimeError):
    """Publishing to the Hub failed; the model folder is still on disk."""


def load_model(source: str | Path, revision: str | None = None, map_location: str = "cpu") -> HubVAE:
    """Load a model folder or Hub repo written by `save_pretrained`, whatever its architecture.

    Args:
        source: A local folder, or a Hub repo id such as "user/face-vae".
        revision: A branch, tag or commit of the Hub repo (pin one for reproducibility).
        map_location: Device for the weights.

    Raises:
        WeightsError: the folder lacks a file, or its files do not match each other.
    """
    source = str(source)
    if os.path.isdir(source):
        config_path = Path(source) / CONFIG_FILE
        if not config_path.is_file():
            raise WeightsError(f"{config_path} is missing")
    elif os.path.exists(source) or source.startswith((".", "/")):
        raise WeightsError(f"{source} is not a model folder")
    else:
        config_path = Path(hf_hub_download(source, CONFIG_FILE, revision=revision))
    try:
        architecture = json.loads(config_path.read_text()).get("architecture", "ConvVAE")
    except (ValueError, AttributeError) as error:
        raise WeightsError(f"{config_path} is not a JSON object: {error}") from error
    if architecture not in ARCHITECTURES:
        raise WeightsError(f"{config_path} names an unknown architecture {architecture!r}")
    return ARCHITECTURES[architecture].from_pretrained(source, revision=revision, map_location=map_location)


def publish(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a model folder (weights, config, latent statistics, card, figures) to the Hub.

    The token comes from the argument or the HF_TOKEN environment variable and is never
    printed. Returns the URL of the commit.
    """
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise PublishError("no Hub token: set HF_TOKEN to a token with write access")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload face VAE")
    except Exception as error:  # offline, refused, or rate-limited: all end the same way
        raise PublishError(
            f"could not publish {folder} to the Hub repo {repo_id}: {type(error).__name__}: {error}. "
            f"The model is saved in {folder}; run train.py --publish-only again when the Hub can be reached."
        ) from None
    return commit.commit_url
