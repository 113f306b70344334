"""Face collections on disk -> uint8 tensors in memory, with labels and a train/val/test split.

Three layouts are recognised:
- LFW as in ../shared/data/lfw: `attributes.csv` (image, person, split, attribute
  probabilities) beside `images/`, and optionally `frames.csv` (hand labels of frame colour).
- CelebA: `img_align_celeba/` and `list_attr_celeba.txt` (+1/-1 labels), split by
  `list_eval_partition.txt` when present.
- A class-per-folder tree (e.g. `glasses/G`, `glasses/NoG`): every folder name becomes a
  binary attribute; photos are face-cropped, and split 80/10/10 by a hash of the file name.

Decoded crops are cached (see `cache_dir`), so the second run starts in seconds.

Usage:
    >>> data = load_split("../shared/data/lfw", "val", image_size=128)  # doctest: +SKIP
    >>> data.images.shape, data.attributes["Eyeglasses"].shape  # doctest: +SKIP
    (torch.Size([1266, 3, 128, 128]), torch.Size([1266]))
"""

from __future__ import annotations

import csv
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vae_demo.images import ImageError, face_crop, lfw_crop, open_image, to_rgb

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
CELEBA_BOX = (10, 46, 166, 202)  # the training framing in CelebA's 178 x 218 aligned photos


class DataError(ValueError):
    """A data folder that cannot be used; the message says what is wrong and where."""


@dataclass
class FaceData:
    """One split of a face collection, decoded."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    attributes: dict[str, torch.Tensor]  # name -> probability (N,), NaN where unknown
    paths: list[str]  # relative to the collection's root
    frame_light: torch.Tensor | None = None  # 1 light, 0 dark, NaN unlabelled or sunglasses

    def __len__(self) -> int:
        return len(self.images)


def cache_dir() -> Path:
    return Path(os.environ.get("VAE_DEMO_CACHE", Path.home() / ".cache" / "vae_demo"))


def detect_layout(root: Path) -> str:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / "attributes.csv").is_file():
        return "lfw"
    if (root / "list_attr_celeba.txt").is_file() and (root / "img_align_celeba").is_dir():
        return "celeba"
    if any(p.is_dir() for p in root.iterdir()):
        return "folders"
    raise DataError(
        f"{root} is none of the known layouts: LFW (attributes.csv + images/), CelebA "
        "(img_align_celeba/ + list_attr_celeba.txt) or one sub-folder per class"
    )


def load_split(root: str | Path, split: str, image_size: int, use_cache: bool = True) -> FaceData:
    """Decode one split of the collection at `root`, cropped to the training framing."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    layout = detect_layout(root)
    paths, attributes, frame_light = _LAYOUTS[layout](root, split)
    if not paths:
        raise DataError(f"the {split!r} split of {root} ({layout} layout) has no images")
    cache_file = cache_dir() / f"{layout}-{_fingerprint(root, paths)}-{split}-{image_size}.npz"
    if use_cache and cache_file.is_file():
        with np.load(cache_file) as cached:
            images, kept = cached["images"], cached["kept"]
    else:
        images, kept = _decode_all(root, layout, paths, image_size)
        if use_cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_file.with_suffix(f".{os.getpid()}.partial.npz")
            np.savez(partial, images=images, kept=kept)
            partial.replace(cache_file)  # atomic: a killed run never leaves half a cache
    return FaceData(
        images=torch.from_numpy(images),
        attributes={k: v[kept] for k, v in attributes.items()},
        paths=[paths[i] for i in kept],
        frame_light=None if frame_light is None else frame_light[kept],
    )


def _fingerprint(root: Path, paths: list[str]) -> str:
    digest = hashlib.sha1(str(root.resolve()).encode())
    digest.update("\n".join(paths).encode())
    return digest.hexdigest()[:12]


# Layouts: each returns (relative paths, attributes, frame_light or None) for one split.


def _read_lfw(root: Path, split: str):
    with open(root / "attributes.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    if rows and not (root / "images").is_dir():
        raise DataError(f"{root / 'images'} does not exist")
    names = [c for c in (rows[0].keys() if rows else []) if c not in ("image", "person", "split")]
    attributes = {n: torch.tensor([float(r[n]) if r[n] != "" else float("nan") for r in rows]) for n in names}
    paths = [f"images/{r['image']}" for r in rows]
    frame_light = None
    if (root / "frames.csv").is_file():
        with open(root / "frames.csv", newline="") as f:
            frames = {r["image"]: r["frame"] for r in csv.DictReader(f)}
        value = {"light": 1.0, "dark": 0.0}
        frame_light = torch.tensor([value.get(frames.get(r["image"], ""), float("nan")) for r in rows])
    return paths, attributes, frame_light


def _read_celeba(root: Path, split: str):
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    table = [line.split() for line in lines[2:] if line.strip()]
    partition_file = root / "list_eval_partition.txt"
    if partition_file.is_file():
        partition = dict(line.split() for line in partition_file.read_text().splitlines() if line.strip())
        wanted = str(SPLITS.index(split))
        table = [row for row in table if partition.get(row[0]) == wanted]
    else:
        table = [row for row in table if _hash_split(row[0]) == split]
    attributes = {n: torch.tensor([(float(row[i + 1]) + 1) / 2 for row in table]) for i, n in enumerate(names)}
    return [f"img_align_celeba/{row[0]}" for row in table], attributes, None


def _read_folders(root: Path, split: str):
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for name in classes:
        for file in sorted((root / name).rglob("*")):
            relative = file.relative_to(root).as_posix()
            if file.suffix.lower() in IMAGE_SUFFIXES and _hash_split(relative) == split:
                paths.append(relative)
                labels.append(name)
    attributes = {n: torch.tensor([float(label == n) for label in labels]) for n in classes}
    return paths, attributes, None


_LAYOUTS = {"lfw": _read_lfw, "celeba": _read_celeba, "folders": _read_folders}


def _hash_split(name: str) -> str:
    bucket = zlib.crc32(name.encode()) % 10
    return "train" if bucket < 8 else "val" if bucket == 8 else "test"


# Decoding ----------------------------------------------------------------------------------


def _decode_one(job: tuple[Path, str, str, int]) -> np.ndarray | str:
    root, layout, path, size = job
    try:
        image = to_rgb(open_image(str(root / path)))
    except (ImageError, OSError) as error:
        return f"{path}: {error}"
    if layout == "lfw":
        crop = lfw_crop(image)
    elif layout == "celeba":
        crop = image.crop(CELEBA_BOX)
    else:
        return np.asarray(face_crop(image, size).image)
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def _decode_all(root: Path, layout: str, paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    jobs = [(root, layout, p, size) for p in paths]
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < 64 or workers == 1:
        results = list(map(_decode_one, jobs))
    else:
        with Pool(workers) as pool:
            results = pool.map(_decode_one, jobs, chunksize=64)
    errors = [r for r in results if isinstance(r, str)]
    kept = np.array([i for i, r in enumerate(results) if not isinstance(r, str)], dtype=np.int64)
    if errors:
        print(f"warning: skipped {len(errors)} unreadable image(s) in {root}, e.g. {errors[:3]}")
    if len(kept) == 0:
        raise DataError(f"none of the {len(paths)} images in {root} could be read, e.g. {errors[:3]}")
    images = np.stack([results[i] for i in kept]).transpose(0, 3, 1, 2).copy()
    return images, kept


class EpochSampler(torch.utils.data.Sampler[int]):
    """A fixed order per (seed, epoch), sharded over processes, that can start mid-epoch.

    The order is a permutation, or with `weights` (N,) a draw of N indices with replacement,
    each in proportion to its weight (`balanced_weights`). Resuming needs no sampler state:
    the order is recomputed from the seed and epoch, and `skip` indices (the ones this process
    already trained on) are dropped.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
        weights: torch.Tensor | None = None,
    ):
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world_size, self.skip = rank, world_size, skip
        self.weights = weights

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        per_rank = self.n // self.world_size  # drop the remainder so every rank does equal work
        return order[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()[self.skip :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.n // self.world_size - self.skip


def balanced_weights(strata: torch.Tensor) -> torch.Tensor:
    """Sampling weights (N,) that draw each stratum in proportion to the square root of its size.

    Strata are groups such as women with glasses (`latent_stats.confounder_strata`). Drawn
    equally, LFW's 125 train photos of women with glasses would fill a quarter of every epoch,
    each seen 20 times; the square root lifts them from 1.2% to 6% of the draws and keeps the
    rest of the collection as common as it was, within a factor of 1.4.

        >>> balanced_weights(torch.tensor([0, 0, 0, 0, 1]))  # shares 2 : 1, not 4 : 1
        tensor([0.1667, 0.1667, 0.1667, 0.1667, 0.3333])
    """
    _, index, counts = strata.unique(return_inverse=True, return_counts=True)
    counts = counts.float()
    share = counts.sqrt() / counts.sqrt().sum()  # each stratum's share of the draws
    return (share / counts)[index]
