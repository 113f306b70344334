"""The attribute classifier: its pieces, and a run of its training command on the fixture."""

import json

import pytest
import torch

from vae_demo.classifier import AttributeClassifier, auc, main, masked_bce, targets


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
    assert main(["--data", str(lfw_root), "--out", str(tmp_path), "--epochs", "2", "--batch-size", "32"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test"]) == {"Eyeglasses", "Male", "Smiling", "Young", "frame_light"}
    assert metrics["test"]["Eyeglasses"]["n"] == 24
    assert AttributeClassifier.from_pretrained(tmp_path).attributes == tuple(metrics["test"])
