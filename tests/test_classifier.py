"""The attribute classifier: its pieces, and a run of its training command on the fixture."""

import json

import pytest
import torch

from vae_demo.classifier import AttributeClassifier, auc, balance_head, main, masked_bce, report, targets
from vae_demo.data import FaceData


def test_auc_of_known_rankings():
    labels = torch.tensor([True, True, False, False])
    assert auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert auc(torch.tensor([0.9, 0.1, 0.5, 0.5]), labels) == pytest.approx(0.5)


def test_unknown_labels_do_not_count():
    attributes = {"Male": torch.tensor([1.0, float("nan"), 0.0])}
    values, known = targets(attributes, torch.tensor([float("nan"), 1.0, float("nan")]), ("Male", "frame_light"))
    assert known.tolist() == [[True, False], [False, True], [True, False]]
    logits = torch.tensor([[5.0, -100.0], [-100.0, 5.0], [-5.0, 100.0]])  # wrong only where unknown
    assert masked_bce(logits, values, known).item() < 0.01


def test_shapes():
    model = AttributeClassifier(channels=(8, 8, 8, 8)).eval()
    x = torch.rand(3, 3, 128, 128)
    assert model(x).shape == (3, 5) and model.embed(x).shape == (3, 8)
    probabilities = model.predict((x * 255).byte())
    assert probabilities.shape == (3, 5) and 0 <= probabilities.min() and probabilities.max() <= 1


def test_training_command_writes_a_loadable_classifier_and_test_metrics(lfw_root, tmp_path):
    argv = ["--data", str(lfw_root), "--out", str(tmp_path), "--epochs", "2", "--batch-size", "32"]
    assert main([*argv, "--channels", "8", "8", "16", "24"]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["channels"] == [8, 8, 16, 24]
    assert AttributeClassifier.from_pretrained(tmp_path).embed(torch.zeros(1, 3, 32, 32)).shape == (1, 24)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test"]) == {"Eyeglasses", "Male", "Smiling", "Young", "frame_light"}
    assert metrics["test"]["Eyeglasses"]["n"] == 24
    assert AttributeClassifier.from_pretrained(tmp_path).attributes == tuple(metrics["test"])
    assert set(metrics["test"]["Male"]["groups"]) == {
        "not Male, not Eyeglasses",
        "not Male, Eyeglasses",
        "Male, not Eyeglasses",
        "Male, Eyeglasses",
    }


def test_balance_only_refits_the_head_and_keeps_the_features(lfw_root, tmp_path):
    assert main(["--data", str(lfw_root), "--out", str(tmp_path), "--balance-only"]) == 1  # nothing to refit yet
    assert main(["--data", str(lfw_root), "--out", str(tmp_path), "--epochs", "1", "--batch-size", "32"]) == 0
    before = AttributeClassifier.from_pretrained(tmp_path).state_dict()
    with torch.no_grad():  # spoil the male head, as a confounded training run might leave it
        spoiled = AttributeClassifier.from_pretrained(tmp_path)
        spoiled.head[-1].weight.mul_(-1)
        spoiled.save_pretrained(tmp_path)

    assert main(["--data", str(lfw_root), "--out", str(tmp_path), "--balance-only"]) == 0

    after = AttributeClassifier.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("body."))
    male = spoiled.attributes.index("Male")
    assert not torch.equal(after["head.1.weight"][male], spoiled.head[-1].weight[male])


def confounded_photos(counts: dict[tuple[int, int], int], seed: int = 0) -> FaceData:
    """8 px photos whose red channel says male and green says glasses, in groups of the given sizes."""
    generator = torch.Generator().manual_seed(seed)
    male, glasses = (torch.cat([torch.full((n,), float(key[i])) for key, n in counts.items()]) for i in (0, 1))
    colour = torch.stack([0.2 + 0.6 * male, 0.2 + 0.6 * glasses, torch.full_like(male, 0.5)], 1)
    colour = colour + 0.05 * torch.randn(colour.shape, generator=generator)
    images = (colour[:, :, None, None].expand(-1, -1, 8, 8).clamp(0, 1) * 255).round().byte()
    other = torch.full_like(male, 0.5)
    attributes = {"Male": male, "Eyeglasses": glasses, "Smiling": other, "Young": other}
    return FaceData(images=images.contiguous(), attributes=attributes, paths=[""] * len(male))


def test_balanced_head_stops_leaning_on_the_confounder():
    # Nine in ten men wear glasses and nine in ten women do not; the head starts out reading
    # only the glasses channel, as a classifier trained on such photos may.
    train = confounded_photos({(1, 1): 90, (1, 0): 10, (0, 1): 10, (0, 0): 90})
    test = confounded_photos({(1, 1): 20, (1, 0): 20, (0, 1): 20, (0, 0): 20}, seed=1)
    model = AttributeClassifier(channels=(3,), image_size=8)
    model.body = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # features: channel means
    male = model.attributes.index("Male")
    with torch.no_grad():
        model.head[-1].weight[male] = torch.tensor([0.0, 4.0, 0.0])
        model.head[-1].bias[male] = 0.0
    before = report(model, test)["Male"]
    assert before["groups"]["not Male, Eyeglasses"] == 0.0 and before["worst_group"] == 0.0

    counts = balance_head(model, train, "Male", "Eyeglasses", blur_sigmas=(0.0,))

    assert counts == {
        "not Male, not Eyeglasses": 90,
        "not Male, Eyeglasses": 10,
        "Male, not Eyeglasses": 10,
        "Male, Eyeglasses": 90,
    }
    after = report(model, test)["Male"]
    assert after["worst_group"] == 1.0
    weight = model.head[-1].weight[male]
    assert weight[0] > 4 * weight[1].abs()  # it reads the red (sex) channel now


def test_balancing_needs_every_group():
    photos = confounded_photos({(1, 1): 5, (0, 0): 5})
    with pytest.raises(ValueError, match="a group is empty"):
        balance_head(AttributeClassifier(channels=(8,), image_size=8), photos, "Male", "Eyeglasses")


def test_training_command_writes_a_model_card_with_its_metrics_and_settings(lfw_root, tmp_path):
    argv = ["--data", str(lfw_root), "--out", str(tmp_path), "--epochs", "1", "--batch-size", "32", "--seed", "5"]
    assert main(argv) == 0
    card = (tmp_path / "README.md").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert card.startswith("---\nlibrary_name: vae_demo")
    assert "PytorchModelHubMixin" not in card  # the Hub's boilerplate card is replaced
    for name, scores in metrics["test"].items():
        assert f"| {name} | {scores['auc']:.3f} | {scores['accuracy']:.3f} |" in card
    assert f"{metrics['test']['Male']['groups']['not Male, Eyeglasses']:.0%}" in card
    assert '"seed": 5' in card and "Inception" in card

    assert main(["--data", str(lfw_root), "--out", str(tmp_path), "--balance-only"]) == 0
    assert "refit the balanced heads only" in (tmp_path / "README.md").read_text()
