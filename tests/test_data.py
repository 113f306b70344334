"""The three data layouts, the split rules, and clear errors for bad data."""

import random

import pytest
import torch
from conftest import draw_face

from vae_demo.data import DataError, EpochSampler, balanced_weights, load_split


def test_lfw_layout_splits_labels_and_frame_colours(lfw_root):
    train = load_split(lfw_root, "train", 32)
    assert train.images.shape == (96, 3, 32, 32) and train.images.dtype == torch.uint8
    assert set(train.attributes) == {"Eyeglasses", "Male", "Smiling", "Young"}
    glasses = train.attributes["Eyeglasses"] > 0.5
    labelled = ~train.frame_light.isnan()
    assert torch.equal(labelled, glasses)  # the fixture labels every wearer's frames
    assert len(load_split(lfw_root, "test", 32)) == 24
    cached = load_split(lfw_root, "train", 32)  # second time from the cache
    assert torch.equal(cached.images, train.images) and cached.paths == train.paths


def test_celeba_layout(tmp_path):
    rng = random.Random(0)
    (tmp_path / "img_align_celeba").mkdir()
    names = [f"{i:06d}.jpg" for i in range(1, 13)]
    for name in names:
        draw_face(rng, None, True, False).resize((178, 218)).save(tmp_path / "img_align_celeba" / name)
    lines = [str(len(names)), "Eyeglasses Male"] + [f"{n} {1 if i % 2 else -1} 1" for i, n in enumerate(names)]
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {0 if i < 8 else 1 if i < 10 else 2}" for i, n in enumerate(names))
    )
    train = load_split(tmp_path, "train", 16)
    assert len(train) == 8 and train.attributes["Eyeglasses"].tolist() == [0, 1] * 4
    assert len(load_split(tmp_path, "test", 16)) == 2


def test_folder_layout_turns_folder_names_into_attributes(tmp_path):
    rng = random.Random(0)
    for cls in ("G", "NoG"):
        (tmp_path / cls).mkdir()
        for i in range(30):
            draw_face(rng, "dark" if cls == "G" else None, True, False).save(tmp_path / cls / f"{cls}{i}.png")
    data = [load_split(tmp_path, split, 16) for split in ("train", "val", "test")]
    assert sum(len(d) for d in data) == 60 and len(data[0]) > 35
    g = data[0].attributes["G"]
    assert torch.equal(g, torch.tensor([float(p.startswith("G/")) for p in data[0].paths]))
    assert torch.equal(g + data[0].attributes["NoG"], torch.ones(len(g)))


def test_unreadable_images_are_skipped_with_a_warning(tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(40):
            draw_face(random.Random(i), None, False, False).save(tmp_path / cls / f"{i}.jpg")
        (tmp_path / cls / "broken.jpg").write_bytes(b"not a jpeg")
    total = sum(len(load_split(tmp_path, s, 16, use_cache=False)) for s in ("train", "val", "test"))
    assert total == 80
    out = capsys.readouterr().out
    assert "unreadable image" in out and "a/broken.jpg" in out and "b/broken.jpg" in out


def test_missing_folder_and_empty_split_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nowhere", "train", 16)
    (tmp_path / "attributes.csv").write_text("image,person,split,Male\n")
    with pytest.raises(DataError, match="has no images"):
        load_split(tmp_path, "train", 16)
    with pytest.raises(DataError, match="split must be"):
        load_split(tmp_path, "everything", 16)


def test_epoch_sampler_is_a_deterministic_sharded_permutation():
    full = EpochSampler(10, seed=1, epoch=0).indices()
    assert sorted(full) == list(range(10))
    assert EpochSampler(10, seed=1, epoch=0).indices() == full != EpochSampler(10, seed=1, epoch=1).indices()
    shards = [EpochSampler(10, 1, 0, rank=r, world_size=2).indices() for r in (0, 1)]
    assert shards[0] + shards[1] == full and len(shards[0]) == 5
    assert EpochSampler(10, 1, 0, skip=4).indices() == full[4:]


def test_balanced_weights_draw_each_stratum_by_the_square_root_of_its_size():
    strata = torch.tensor([0] * 900 + [1] * 100 + [2] * 4)  # shares 30 : 10 : 2
    weights = balanced_weights(strata)
    shares = torch.stack([weights[strata == s].sum() for s in range(3)])
    torch.testing.assert_close(shares, torch.tensor([30.0, 10.0, 2.0]) / 42)
    assert weights[strata == 2].unique().numel() == 1  # equal within a stratum

    drawn = torch.tensor(EpochSampler(len(strata), seed=3, epoch=0, weights=weights).indices())
    assert len(drawn) == len(strata)
    assert abs((strata[drawn] == 2).float().mean().item() - 2 / 42) < 0.02  # 0.4% of the photos, 5% of the draws


def test_a_weighted_epoch_sampler_is_deterministic_sharded_and_resumable():
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0])
    full = EpochSampler(10, seed=1, epoch=0, weights=weights).indices()
    assert full == EpochSampler(10, seed=1, epoch=0, weights=weights).indices()
    assert full != EpochSampler(10, seed=1, epoch=1, weights=weights).indices()
    assert full.count(9) > 1  # drawn with replacement
    shards = [EpochSampler(10, 1, 0, rank=r, world_size=2, weights=weights).indices() for r in (0, 1)]
    assert shards[0] + shards[1] == full
    assert EpochSampler(10, 1, 0, skip=4, weights=weights).indices() == full[4:]
