"""Weights in and out: load any of our model folders (local or on the Hub), publish one.

Usage:
    >>> model = load_model("assets/model")  # doctest: +SKIP
    >>> publish("runs/default/model", "me/face-vae")  # doctest: +SKIP

Publish a finished model folder from the shell (token from HF_TOKEN):
    python -m vae_demo.hub runs/default/model me/face-vae
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download

from vae_demo.baselines import SeedConvVAE, SeedMLPVAE
from vae_demo.model import CONFIG_FILE, ConvVAE, HubVAE, WeightsError

ARCHITECTURES: dict[str, type[HubVAE]] = {"ConvVAE": ConvVAE, "SeedConvVAE": SeedConvVAE, "SeedMLPVAE": SeedMLPVAE}
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "model"
HUB_TIMEOUT_S = 6.0


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
            f"The model is saved in {folder}; publish it later with: python -m vae_demo.hub {folder} {repo_id}"
        ) from None
    return commit.commit_url


@dataclass
class ModelChoice:
    """The model an app runs on, where it came from, and why, if it is not the one asked for."""

    model: HubVAE
    source: str  # e.g. "Hub repo me/face-vae @ v1" or "bundled model (assets/model)"
    folder: Path | None  # a local folder holding its files (for the model card), if any
    warning: str | None = None


def load_with_fallback(
    requested: str | None = None,
    revision: str | None = None,
    timeout_s: float = HUB_TIMEOUT_S,
    bundled: Path = BUNDLED_MODEL,
) -> ModelChoice:
    """Load the requested model, or the bundled one (saying why) when that fails or takes too long.

    A Hub download runs in a worker thread and is abandoned after `timeout_s`, so an app
    never hangs at start-up on a slow or absent network.
    """
    if not requested or (os.path.isdir(requested) and Path(requested).resolve() == bundled.resolve()):
        return ModelChoice(
            load_model(bundled), f"bundled model ({bundled.relative_to(bundled.parent.parent)})", bundled
        )
    is_folder = os.path.isdir(requested)
    label = f"local folder {requested}" if is_folder else f"Hub repo {requested} @ {revision or 'main'}"
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-download")
    future = pool.submit(load_model, requested, revision)
    pool.shutdown(wait=False)
    try:
        model = future.result(timeout=timeout_s)
    except FutureTimeout:
        reason = f"no answer within {timeout_s:g} s"
    except Exception as error:  # offline, missing repo, bad files: all fall back the same way
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    else:
        folder = Path(requested) if is_folder else _hub_folder(requested, revision)
        return ModelChoice(model, label, folder)
    warning = f"Could not load the {label} ({reason}). Showing the bundled model instead."
    choice = load_with_fallback(None, bundled=bundled)
    choice.warning = warning
    return choice


def _hub_folder(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a downloaded Hub model (for its card and metrics), if cached."""
    try:
        return Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision, local_files_only=True)).parent
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Publish a model folder to the Hugging Face Hub (token: HF_TOKEN).")
    parser.add_argument("folder", help="a model folder written by train.py (its model/ subfolder)")
    parser.add_argument("repo_id", help="Hub repo id, e.g. me/face-vae")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    args = parser.parse_args(argv)
    try:
        load_model(args.folder)  # refuse to publish something the app could not load
        print(f"published: {publish(args.folder, args.repo_id, private=args.private)}")
    except (WeightsError, PublishError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
