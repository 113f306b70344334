"""Latent operations on vectors whose answers are known."""

import math

import pytest
import torch

from vae_demo.latents import arithmetic, edit, group_mean, hold, interpolate, lerp, slerp, traversal


def test_slerp_is_exact_at_the_ends():
    torch.manual_seed(0)
    a, b = torch.randn(32), torch.randn(32)
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    path = interpolate(a, b, 9, "slerp")
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    assert slerp(a, b, 0.5).norm().item() == pytest.approx(3.0)
    assert torch.allclose(slerp(a, b, 0.5), torch.tensor([3 / math.sqrt(2), 3 / math.sqrt(2)]))
    assert lerp(a, b, 0.5).norm().item() == pytest.approx(3 / math.sqrt(2))


def test_slerp_norm_goes_linearly_between_unequal_norms():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    for t in (0.25, 0.5, 0.75):
        assert slerp(a, b, t).norm().item() == pytest.approx(1 + 2 * t)


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = torch.tensor([1.0, 1.0])
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)


def test_slerp_angles_are_even():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = interpolate(a, b, 5, "slerp")
    angles = torch.atan2(path[:, 1], path[:, 0])
    assert torch.allclose(angles.diff(), torch.full((4,), math.pi / 8), atol=1e-6)


def test_lerp_path_is_a_straight_line():
    a, b = torch.zeros(3), torch.tensor([4.0, 8.0, 0.0])
    assert torch.allclose(interpolate(a, b, 5, "lerp")[1], torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError):
        interpolate(a, b, 5, "cubic")


def test_arithmetic_on_group_means():
    men_glasses = [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 2.0])]  # male=1, glasses=1
    women_glasses = [torch.tensor([0.0, 1.0, 1.0])]
    women = [torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.0, 0.0, 1.0])]
    # mean(A) = (1, 1, 1), mean(B) = (0, 1, 1), mean(C) = (0, 0, 2): a man without glasses
    assert torch.equal(arithmetic(men_glasses, women_glasses, women), torch.tensor([1.0, 0.0, 2.0]))


def test_group_mean_needs_an_image():
    assert torch.equal(group_mean(torch.ones(2, 1, 3)), torch.ones(3))
    with pytest.raises(ValueError):
        group_mean([])


def test_an_edit_takes_one_strength_for_all_codes_or_one_per_code():
    z, direction = torch.zeros(3, 2), torch.tensor([1.0, 2.0])
    assert torch.equal(edit(z, direction, 0.5), torch.tensor([[0.5, 1.0]] * 3))
    per_code = edit(z, direction, torch.tensor([0.0, 1.0, -1.0]))
    assert torch.equal(per_code, torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, -2.0]]))


def test_edit_and_traversal_move_along_the_direction():
    z, d = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0])
    assert torch.equal(edit(z, d, 2.0), torch.tensor([2.0, 2.0]))
    steps = traversal(z, d, [-1.0, 0.0, 1.0])
    assert steps.shape == (3, 2) and torch.equal(steps[1], z) and torch.equal(steps[2], torch.tensor([1.5, 2.0]))


def test_showcase_endpoints_put_glasses_on_then_set_the_frame_colour_levels():
    from vae_demo.latent_stats import LatentStats
    from vae_demo.model import ConvVAE
    from vae_demo.studio import Studio

    model = ConvVAE(image_size=32, channels=(8, 16), latent_dim=4, res_blocks=0)
    glasses, frame = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0, 0.0])
    model.latent_stats = LatentStats(
        mean=torch.zeros(4),
        cov=torch.eye(4),
        directions={"Eyeglasses": glasses, "frame_light": frame},
        info={"frame_light": {"negative_level": -1.0, "positive_level": 3.0}},
    )
    studio = Studio(model, examples=[])
    z = torch.tensor([0.5, 7.0, -2.0, 1.0])
    dark, light = studio.frame_colour_endpoints(z, spread=1.0, glasses=0.0)
    assert torch.allclose(dark, torch.tensor([0.5, -1.0, -2.0, 1.0]))  # only the frame coordinate moves
    assert torch.allclose(light, torch.tensor([0.5, 3.0, -2.0, 1.0]))
    dark, light = studio.frame_colour_endpoints(z, spread=2.0, glasses=2.5)
    assert torch.allclose(dark, torch.tensor([3.0, -3.0, -2.0, 1.0]))  # glasses added, levels spread apart
    assert torch.allclose(light, torch.tensor([3.0, 5.0, -2.0, 1.0]))


def test_a_models_own_showcase_settings_are_saved_and_used(tmp_path):
    from vae_demo.latent_stats import LatentStats
    from vae_demo.model import ConvVAE
    from vae_demo.studio import SHOWCASE_GLASSES, SHOWCASE_GLASSES_IN_GAPS, SHOWCASE_SPREAD, Studio

    stats = LatentStats(mean=torch.zeros(4), cov=torch.eye(4), directions={"frame_light": torch.ones(4)})
    stats.save(tmp_path / "in_gaps.safetensors")  # computed before the decoded unit
    stats.info = {"frame_light": {"decoded_unit": 1.1}}
    stats.save(tmp_path / "defaults.safetensors")
    stats.showcase = {"glasses": 2.0, "spread": 3.0}
    stats.save(tmp_path / "own.safetensors")
    model = ConvVAE(image_size=32, channels=(8, 16), latent_dim=4, res_blocks=0)
    model.latent_stats = LatentStats.load(tmp_path / "in_gaps.safetensors")
    assert Studio(model, examples=[]).showcase_settings() == (SHOWCASE_GLASSES_IN_GAPS, SHOWCASE_SPREAD)
    model.latent_stats = LatentStats.load(tmp_path / "defaults.safetensors")
    assert model.latent_stats.showcase is None
    assert Studio(model, examples=[]).showcase_settings() == (SHOWCASE_GLASSES, SHOWCASE_SPREAD)
    model.latent_stats = LatentStats.load(tmp_path / "own.safetensors")
    studio = Studio(model, examples=[])
    assert studio.showcase_settings() == (2.0, 3.0)
    z = torch.zeros(4)
    dark, light = studio.frame_colour_endpoints(z)  # levels +-0.5 around 0, spread 3 times apart
    assert torch.allclose(light - dark, 3.0 * torch.ones(4))


def test_hold_puts_each_codes_reading_back_along_the_direction():
    torch.manual_seed(0)
    direction = torch.tensor([0.0, 1.0, 0.0])
    weights = torch.tensor([0.5, 2.0, -1.0])

    def read(z):  # grows along the direction, not linearly, and differently for each code
        return torch.tanh(z @ weights / 4) * 4

    z = torch.randn(16, 3) / 2
    target = read(z) + torch.linspace(-1, 1, 16)  # each reachable within the reach
    held = hold(read, z, target, direction, steps=6, reach=3.0)
    assert torch.allclose(read(held), target, atol=1e-3)
    assert torch.equal(held[:, [0, 2]], z[:, [0, 2]])  # only the direction's coordinate moves
    near = hold(read, z, target, direction, steps=6, reach=0.1)
    assert (near - z)[:, 1].abs().max() <= 0.1 + 1e-6  # no further than the reach


def test_hold_copes_with_a_reading_that_does_not_move():
    flat = lambda z: torch.zeros(len(z))  # noqa: E731
    z = torch.ones(3, 2)
    held = hold(flat, z, torch.ones(3), torch.tensor([1.0, 0.0]), reach=2.0)
    assert held.isfinite().all() and (held[:, 0] - 1).abs().max() <= 2.0
