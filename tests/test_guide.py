"""Held edits: a guide classifier steers an edit back to the sex call it started with."""

import numpy as np
import pytest
import torch

from vae_demo.classifier import AttributeClassifier
from vae_demo.evaluate import edit_effect
from vae_demo.guide import Committee, held_edit, load_guide, own_strengths
from vae_demo.images import ImageError
from vae_demo.latent_stats import LatentStats
from vae_demo.model import HubVAE
from vae_demo.studio import Studio

GLASSES, MALE = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


class Painter(HubVAE):
    """Paints code entry 0 (glasses) into the red channel and entry 1 (sex) into green and blue."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to report
        self.image_size = 8
        self.latent_stats = LatentStats(torch.zeros(2), torch.eye(2), {"Eyeglasses": GLASSES, "Male": MALE})

    def decode(self, z):
        return torch.stack([z[:, 0], z[:, 1], z[:, 1]], 1)[..., None, None].expand(-1, 3, 8, 8).clamp(0, 1)


class GlassesLookMale:
    """Reads glasses in red and sex in green, pushed towards male by glasses: the flips a held edit undoes."""

    attributes = ["Eyeglasses", "Male"]

    def logits(self, x, batch_size=256):
        red, green = x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2))
        return torch.stack([8 * (red - 0.5), 8 * (green + 0.3 * red - 0.5)], 1)

    def describe(self, x, batch_size=256):
        return x.flatten(1), torch.sigmoid(self.logits(x))


def test_a_held_edit_adds_the_direction_and_takes_back_what_the_guide_reads_as_sex():
    faces = torch.tensor([[0.0, 0.2], [0.0, 0.3], [0.1, 0.45], [0.0, 0.8]])
    held = held_edit(Painter(), GlassesLookMale(), faces, {"Eyeglasses": 0.6})
    assert torch.allclose(held[:, 0], faces[:, 0] + 0.6)  # the glasses are all there
    assert torch.allclose(held[:, 1], faces[:, 1] - 0.3 * 0.6, atol=1e-4)  # the guide's push undone


def test_a_held_edit_keeps_what_the_kept_directions_own_slider_asks_for():
    faces = torch.tensor([[0.0, 0.3]])
    held = held_edit(Painter(), GlassesLookMale(), faces, {"Eyeglasses": 0.5, "Male": 0.2})
    assert torch.allclose(held, torch.tensor([[0.5, 0.3 + 0.2 - 0.15]]), atol=1e-4)
    alone = held_edit(Painter(), GlassesLookMale(), faces, {"Male": 0.2, "Eyeglasses": 0.0})
    assert torch.equal(alone, faces + 0.2 * MALE)  # nothing else moved: nothing to hold


def test_the_evaluation_counts_no_flips_where_the_guide_is_the_judge():
    faces = torch.tensor([[0.0, 0.1], [0.0, 0.4], [0.0, 0.45], [0.0, 0.8]])  # two near the boundary
    plain = edit_effect(Painter(), GlassesLookMale(), faces, "Eyeglasses", 1.0, 4)
    held = edit_effect(Painter(), GlassesLookMale(), faces, "Eyeglasses", 1.0, 4, guide=GlassesLookMale())
    assert plain["male_flips"] == 0.5 and held["male_flips"] == 0.0
    assert plain["success"] == held["success"] == 1.0


def test_the_studio_holds_the_sex_call_only_when_asked_and_able():
    face = torch.tensor([0.0, 0.45])
    able = Studio(Painter(), examples=[], guide=GlassesLookMale())
    unable = Studio(Painter(), examples=[])
    assert able.can_hold and not unable.can_hold
    green = {
        (name, keep): np.asarray(studio.attribute_edit(face, {"Eyeglasses": 0.5}, keep_sex=keep))[0, 0, 1]
        for name, studio in (("able", able), ("unable", unable))
        for keep in (False, True)
    }
    assert green[("able", False)] == green[("unable", False)] == green[("unable", True)]  # plain edits
    assert green[("able", True)] == pytest.approx(255 * (0.45 - 0.15), abs=1.5)


def test_each_face_gets_the_least_strength_at_which_the_guide_sees_glasses():
    # The guide's P(glasses) is sigmoid(8 (red - 0.5)), red the glasses entry: P > 0.65 from red 0.58 on.
    faces = torch.tensor([[0.0, 0.3], [0.3, 0.3], [0.55, 0.3], [-2.0, 0.3]])
    grid = (0.25, 0.5, 0.75, 1.0)
    own = own_strengths(Painter(), GlassesLookMale(), faces, seen=0.65, grid=grid)
    assert own.tolist() == [0.75, 0.5, 0.25, 1.0]  # the last never gets there: the grid's largest
    assert own_strengths(Painter(), GlassesLookMale(), faces[:2], seen=0.99, grid=grid).tolist() == [1.0, 1.0]
    held = held_edit(Painter(), GlassesLookMale(), faces, {"Eyeglasses": own})
    assert torch.allclose(held[:, 0], faces[:, 0] + own)  # one strength per face, each held
    red_added = (faces[:3, 0] + own[:3]).clamp(0, 1) - faces[:3, 0]
    assert torch.allclose(held[:3, 1], faces[:3, 1] - 0.3 * red_added, atol=1e-3)  # and the guide's push undone


def test_the_studio_finds_a_face_its_own_strength_only_with_a_guide():
    face = torch.tensor([0.0, 0.3])
    assert Studio(Painter(), examples=[], guide=GlassesLookMale()).own_strength(face) == 1.0
    with pytest.raises(ImageError, match="guide"):
        Studio(Painter(), examples=[]).own_strength(face)


def test_a_committee_reads_the_mean_of_its_members_logits(tmp_path):
    torch.manual_seed(0)
    members = [AttributeClassifier(channels=(4, 4, 4, 4)) for _ in range(3)]
    for seed, member in zip((1, 3, 4), members, strict=True):
        member.save_pretrained(tmp_path / "guide" / f"seed{seed}")
    (tmp_path / "guide" / "README.md").write_text("what the committee is")  # not a member
    guide = load_guide(tmp_path / "guide", "no held edits")
    assert isinstance(guide, Committee) and len(guide.members) == 3
    pictures = torch.rand(5, 3, 128, 128)
    mean = torch.stack([m.logits(pictures) for m in members]).mean(0)
    assert torch.allclose(guide.logits(pictures), mean, atol=1e-5)
    assert torch.allclose(guide.predict(pictures), torch.sigmoid(mean), atol=1e-5)
    assert guide.attributes == members[0].attributes


def test_a_folder_of_one_classifier_is_a_guide_and_an_empty_one_says_what_goes_without(tmp_path, capsys):
    AttributeClassifier(channels=(4, 4, 4, 4)).save_pretrained(tmp_path / "one")
    assert isinstance(load_guide(tmp_path / "one", "no held edits"), AttributeClassifier)
    (tmp_path / "empty").mkdir()
    assert load_guide(tmp_path / "empty", "no held edits") is None
    assert load_guide(tmp_path / "missing", "no held edits") is None
    assert capsys.readouterr().err.count("no held edits") == 2


def test_a_committee_refuses_members_that_read_different_attributes():
    with pytest.raises(ValueError, match="same attributes"):
        Committee([AttributeClassifier(channels=(4, 4, 4, 4)), AttributeClassifier(("Male",), (4, 4, 4, 4))])
    with pytest.raises(ValueError, match="at least one"):
        Committee([])


def test_the_bundled_guide_is_a_committee_of_six_that_steers_a_held_edit():
    from vae_demo.guide import GUIDE_DIR
    from vae_demo.hub import load_model

    guide = load_guide(GUIDE_DIR, "no held edits")
    assert isinstance(guide, Committee) and len(guide.members) == 6
    model = load_model("assets/model")
    z = model.latent_stats.mean[None].repeat(2, 1)
    held = held_edit(model, guide, z, {"Eyeglasses": 1.75})
    moved = held - (z + 1.75 * model.latent_stats.directions["Eyeglasses"])
    male = model.latent_stats.directions["Male"]
    along = moved @ male / male.dot(male)  # what the hold added: a multiple of the Male direction, within reach 1
    assert torch.allclose(moved, along[:, None] * male, atol=1e-4) and (along.abs() <= 1 + 1e-5).all()
