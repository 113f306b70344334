"""The image metrics and the latent statistics against hand-computed values."""

import math

import pytest
import torch
from torch.distributions import Normal

from vae_demo.card import latent_stats_section
from vae_demo.evaluate import PassResult, psnr, ssim, summarize
from vae_demo.latent_stats import (
    BALANCE,
    ORTHOGONAL_TO,
    LatentStats,
    attribute_direction,
    compute_directions,
    direction_groups,
)
from vae_demo.objective import kl_to_standard_normal


def test_psnr_of_a_known_error():
    x = torch.zeros(1, 3, 8, 8)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert (ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)) < 0.7).all()


def test_summary_uses_the_given_decoder_variance():
    result = PassResult(
        psnr=torch.tensor([20.0, 22.0]),
        eye_band_psnr=torch.tensor([18.0, 20.0]),
        ssim=torch.tensor([0.5, 0.5]),
        mse=torch.tensor([0.01, 0.01]),
        sampled_squared_error=torch.tensor([4.0, 4.0], dtype=torch.float64),
        mu=torch.tensor([[1.0, 0.0], [2.0, 0.0]]),
        logvar=torch.zeros(2, 2),  # KL = |mu|^2 / 2: 0.5 and 2.0 nats
        dims=100,
    )
    log_sigma = math.log(0.2)
    metrics = summarize(result, log_sigma)
    nll = 4.0 / (2 * 0.04) + 100 * (log_sigma + 0.5 * math.log(2 * math.pi))
    assert metrics["kl_nats"] == pytest.approx(1.25)
    assert metrics["psnr"] == pytest.approx(21.0) and metrics["eye_band_psnr"] == pytest.approx(19.0)
    assert metrics["neg_elbo_nats"] == pytest.approx(nll + 1.25)
    assert metrics["neg_elbo_bits_per_dim"] == pytest.approx(((nll + 1.25) / 100 + math.log(256)) / math.log(2))
    assert metrics["active_units"] == 1  # only the first dimension varies across images
    assert summarize(result)["decoder_log_sigma"] == pytest.approx(0.5 * math.log(4.0 / 100))


def test_fitted_sampler_reproduces_the_code_distribution():
    torch.manual_seed(0)
    codes = torch.randn(20_000, 3) @ torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.5]]) + 5
    stats = LatentStats.fit(codes)
    samples = stats.sample(20_000, "fitted", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(samples.mean(0), codes.mean(0), atol=0.05)
    assert torch.allclose(torch.cov(samples.T), torch.cov(codes.T), atol=0.1)
    assert stats.sample(4, "prior").shape == (4, 3)
    prior = stats.sample(5000, "prior", temperature=0.5, generator=torch.Generator().manual_seed(2))
    assert prior.std().item() == pytest.approx(0.5, abs=0.02)


def test_the_learned_prior_is_the_aggregate_posterior_and_beats_the_standard_normal():
    # Posteriors off the middle of N(0, I), with correlated means and small variances.
    torch.manual_seed(0)
    mu = torch.randn(5000, 3) @ torch.tensor([[1.5, 0.0, 0.0], [1.2, 0.4, 0.0], [0.0, 0.0, 0.3]]) + 2
    logvar = torch.full_like(mu, math.log(0.04))
    stats = LatentStats.fit(mu, logvar=logvar)
    # Cov(mu) + E[diag sigma^2]: the moments of the mixture of the posteriors.
    assert torch.allclose(stats.cov, torch.cov(mu.T) + 0.04 * torch.eye(3), atol=1e-5)
    z = mu + 0.2 * torch.randn_like(mu)  # draws from the aggregate posterior
    assert torch.allclose(stats.sample(20_000).mean(0), z.mean(0), atol=0.05)
    kl_learned, kl_standard = stats.kl(mu, logvar).mean(), kl_to_standard_normal(mu, logvar).mean()
    assert 0 < kl_learned < kl_standard
    # The closed-form KL agrees with its Monte Carlo estimate through the prior's density.
    log_q = Normal(mu, 0.2).log_prob(z).sum(1)
    assert (log_q - stats.log_prob(z)).mean().item() == pytest.approx(kl_learned.item(), abs=0.05)


def test_attribute_direction_is_balanced_over_confounders():
    # Dimension 0 carries glasses, dimension 1 carries sex. Glasses wearers here are mostly men,
    # so the unbalanced difference of means would also point along the sex dimension.
    male = torch.tensor([1.0] * 8 + [0.0] * 2 + [1.0] * 2 + [0.0] * 8)
    glasses = torch.tensor([1.0] * 10 + [0.0] * 10)
    codes = torch.stack([glasses * 3, male * 2], dim=1)
    naive, _ = attribute_direction(codes, glasses > 0.5, glasses < 0.5)
    assert naive[1] > 1.0
    attributes = {"Eyeglasses": glasses, "Male": male, "Young": torch.full((20,), float("nan"))}
    directions, info = compute_directions(codes, attributes)
    assert torch.allclose(directions["Eyeglasses"], torch.tensor([3.0, 0.0]))
    assert info["Eyeglasses"]["positives"] == info["Eyeglasses"]["negatives"] == 4  # 2 men + 2 women each side


def test_glasses_direction_averages_the_wearers_the_decoder_draws_with_glasses():
    # 60 wearers and 60 others, half of each sex. Coordinate 0 is how strongly a face's code
    # draws glasses: 4 for the 40 wearers whose reconstructions show them, 1 for the 20 whose
    # thin frames fade, 0 for the others. Coordinate 1 is sex, coordinate 2 noise.
    wearer = torch.tensor([1.0] * 60 + [0.0] * 60)
    male = torch.tensor(([1.0] * 30 + [0.0] * 30) * 2)
    drawn = torch.tensor(([4.0] * 20 + [1.0] * 10) * 2 + [0.0] * 60)
    codes = torch.stack([drawn, 2 * male, torch.randn(120, generator=torch.Generator().manual_seed(0))], 1)
    attributes = {"Eyeglasses": wearer, "Male": male}
    shown = {"Eyeglasses": (drawn / 4).clamp(0, 1)}

    by_labels, _ = compute_directions(codes, attributes)
    by_drawings, info = compute_directions(codes, attributes, shown=shown)

    assert by_labels["Eyeglasses"][0] == pytest.approx(3.0)  # (40 * 4 + 20 * 1) / 60
    assert by_drawings["Eyeglasses"][0] == pytest.approx(4.0)
    assert info["Eyeglasses"]["shown_in_reconstruction"] and info["Eyeglasses"]["positives"] == 40
    assert info["Male"]["shown_in_reconstruction"] is False  # only the glasses are picked this way


def test_direction_groups_are_the_rows_the_direction_averages():
    # The wearers of the test above: 40 drawn with glasses (coordinate 0 is 4), half of them men.
    wearer = torch.tensor([1.0] * 60 + [0.0] * 60)
    male = torch.tensor(([1.0] * 30 + [0.0] * 30) * 2)
    drawn = torch.tensor(([4.0] * 20 + [1.0] * 10) * 2 + [0.0] * 60)
    attributes = {"Eyeglasses": wearer, "Male": male}

    pos, neg, info = direction_groups("Eyeglasses", wearer, attributes, {"Eyeglasses": (drawn / 4).clamp(0, 1)})

    assert len(pos) == len(neg) == 40 and (drawn[pos] == 4).all() and (wearer[neg] == 0).all()
    assert male[pos].sum() == male[neg].sum() == 20
    assert info == {
        "strata": 2,
        "balanced_over": ["Male"],
        "shown_in_reconstruction": True,
        "shown_threshold": 0.9,
        "shown_with": [],
    }


def test_glasses_direction_falls_back_to_the_labels_when_few_reconstructions_show_them():
    wearer = torch.tensor([1.0] * 30 + [0.0] * 30)
    codes = torch.stack([wearer * 2, torch.randn(60, generator=torch.Generator().manual_seed(0))], 1)
    shown = {"Eyeglasses": torch.tensor([1.0] * 5 + [0.0] * 55)}  # 5 < MIN_SHOWN
    directions, info = compute_directions(codes, {"Eyeglasses": wearer}, shown=shown)
    assert info["Eyeglasses"]["shown_in_reconstruction"] is False and info["Eyeglasses"]["positives"] == 30
    assert directions["Eyeglasses"][0] == pytest.approx(2.0)


def test_frame_colour_direction_takes_reconstructions_that_show_frames_of_their_colour():
    # 40 light and 40 dark labelled frames. Coordinate 0 is how light the decoder draws the
    # frames, never confidently (|p - 0.5| < 0.4), so the plain call decides; coordinate 1 is
    # how visible they are: the first 10 of each colour come out without glasses and are left out.
    generator = torch.Generator().manual_seed(0)
    light = torch.tensor([1.0] * 40 + [0.0] * 40)
    visible = torch.tensor(([0.0] * 10 + [1.0] * 30) * 2)
    drawn_light = torch.tensor(([0.0] * 10 + [2.0] * 30) + [0.0] * 40)
    codes = torch.stack([drawn_light, visible, torch.randn(80, generator=generator)], 1)
    attributes = {"Eyeglasses": torch.ones(80)}
    shown = {"frame_light": 0.5 + 0.3 * (drawn_light - 1).sign(), "Eyeglasses": visible}
    shown["frame_light"][40:] = 0.3

    directions, info = compute_directions(codes, attributes, frame_light=light, shown=shown)

    assert info["frame_light"]["shown_in_reconstruction"] and info["frame_light"]["shown_threshold"] == 0.5
    assert info["frame_light"]["shown_with"] == ["Eyeglasses"]
    assert info["frame_light"]["positives"] == info["frame_light"]["negatives"] == 30
    assert directions["frame_light"][0] == pytest.approx(2.0)  # by the labels alone: 1.5
    assert directions["frame_light"][1] == pytest.approx(0.0)


def test_model_card_says_how_each_direction_was_chosen():
    codes = torch.randn(80, 3, generator=torch.Generator().manual_seed(0))
    light = torch.tensor([1.0, 0.0] * 40)
    shown = {"frame_light": light * 0.8 + 0.1, "Eyeglasses": torch.ones(80)}
    _, info = compute_directions(codes, {"Eyeglasses": torch.ones(80)}, frame_light=light, shown=shown)
    section = latent_stats_section(info)
    assert section.startswith("## Latent statistics")
    line = next(line for line in section.splitlines() if line.startswith("- `frame_light`"))
    assert line.startswith("- `frame_light`: 40 positives vs 40 negatives, balanced over nothing")
    assert line.endswith("agree with the label (attribute classifier, p > 0.5) and show Eyeglasses")


def test_glasses_direction_is_made_orthogonal_to_the_male_direction():
    # Balanced by the labels, yet the wearers' codes lean one way along coordinate 1, which
    # the Male direction also uses: that lean is removed.
    generator = torch.Generator().manual_seed(0)
    wearer = torch.tensor([1.0, 0.0] * 40)
    male = torch.tensor([1.0, 1.0, 0.0, 0.0] * 20)
    codes = torch.stack([3 * wearer, 2 * male - 0.5 * wearer, torch.randn(80, generator=generator)], 1)
    directions, info = compute_directions(codes, {"Eyeglasses": wearer, "Male": male})
    unit_male = directions["Male"] / directions["Male"].norm()
    assert directions["Eyeglasses"] @ unit_male == pytest.approx(0.0, abs=1e-5)
    assert info["Eyeglasses"]["orthogonal_to"] == "Male"
    assert info["Eyeglasses"]["removed_length"] == pytest.approx(-0.5, abs=0.05)


def test_frame_colour_direction_leaves_the_glasses_alone_and_its_levels_follow():
    # Light frames are drawn fainter: their codes sit lower along the glasses coordinate (0)
    # as well as higher along the colour coordinate (1). The frame direction keeps only the
    # colour, and the dark and light levels the showcase uses lie along that final direction.
    generator = torch.Generator().manual_seed(0)
    wearer = torch.tensor([1.0] * 60 + [0.0] * 40)
    light = torch.tensor([1.0] * 30 + [0.0] * 30 + [float("nan")] * 40)
    colour = torch.nan_to_num(light, nan=0.0)
    codes = torch.stack([4 * wearer - colour, 2 * colour, 0.1 * torch.randn(100, generator=generator)], 1)
    directions, info = compute_directions(codes, {"Eyeglasses": wearer}, frame_light=light)
    glasses, frame = directions["Eyeglasses"], directions["frame_light"]
    assert frame @ glasses == pytest.approx(0.0, abs=1e-5)
    assert info["frame_light"]["orthogonal_to"] == "Eyeglasses"
    unit = frame / frame.norm()
    assert info["frame_light"]["negative_level"] == pytest.approx(float((codes[30:60] @ unit).mean()), abs=1e-5)
    assert info["frame_light"]["positive_level"] == pytest.approx(float((codes[:30] @ unit).mean()), abs=1e-5)


def test_frame_colour_direction_can_be_kept_to_the_cells_over_the_eyes():
    # Entries 0-1 are the cells over the eyes, 2-3 the rest of the face. Light frames are
    # lighter in entry 0, drawn fainter in entry 1 (the glasses coordinate there) and come with
    # lighter skin in entry 2. Only the cells over the eyes are kept, and the glasses' part is
    # removed there without reaching outside them (the glasses direction also uses entry 3).
    generator = torch.Generator().manual_seed(0)
    wearer = torch.tensor([1.0] * 60 + [0.0] * 60)
    light = torch.tensor([1.0] * 30 + [0.0] * 30 + [float("nan")] * 60)
    colour = torch.tensor([1.0] * 30 + [-1.0] * 30 + [0.0] * 60)  # wearers average 0
    codes = torch.stack([colour, wearer - 0.25 * colour, colour, 3 * wearer], 1)
    codes = codes + 0.01 * torch.randn(120, 4, generator=generator)
    eyes = torch.tensor([True, True, False, False])
    directions, info = compute_directions(codes, {"Eyeglasses": wearer}, frame_light=light, eye_cells=eyes)
    assert directions["frame_light"].tolist() == pytest.approx([2.0, 0.0, 0.0, 0.0], abs=0.02)
    assert info["frame_light"]["removed_length"] == pytest.approx(-0.5, abs=0.02)
    assert info["frame_light"]["over_the_eyes"] == 2
    assert "kept to the 2 code entries over the eyes" in latent_stats_section(info)
    assert directions["Eyeglasses"].tolist() == pytest.approx([0.0, 1.0, 0.0, 3.0], abs=0.02)  # not cut
    unit = directions["frame_light"] / directions["frame_light"].norm()
    assert info["frame_light"]["positive_level"] == pytest.approx(float((codes[:30] @ unit).mean()), abs=1e-5)


def test_directions_are_computed_after_those_they_are_made_orthogonal_to():
    order = list(BALANCE)
    for name, other in ORTHOGONAL_TO.items():
        assert order.index(other) < order.index(name), f"{name} needs {other} first"


def test_directions_are_scaled_so_that_strength_one_draws_the_groups_whole_difference():
    # Coordinate 0 carries glasses, but the decoder draws them only from codes above 1: half the
    # wearers sit at 4 (drawn at 3), half at 0 (not drawn), so their pictures average 1.5, while
    # the mean code, 2, draws only 1. A non-wearer (at 0) moved by k times the difference of
    # mean codes draws 2k - 1: strength 1 must be 1.25 of that difference. A linear decoder
    # draws the whole difference already.
    generator = torch.Generator().manual_seed(0)
    wearer = torch.tensor([1.0] * 40 + [0.0] * 40)
    codes = torch.stack([torch.tensor([4.0, 0.0] * 20 + [0.0] * 40), torch.randn(80, generator=generator)], 1)

    def draws_strong_codes(z):
        return torch.relu(z[:, :1] - 1).view(-1, 1, 1, 1)

    def linear(z):
        return (z @ torch.tensor([1.0, 0.5])).view(-1, 1, 1, 1)

    plain, _ = compute_directions(codes, {"Eyeglasses": wearer})
    scaled, info = compute_directions(codes, {"Eyeglasses": wearer}, decode=draws_strong_codes)
    assert info["Eyeglasses"]["decoded_unit"] == pytest.approx(1.25, abs=0.002)
    assert torch.allclose(scaled["Eyeglasses"], info["Eyeglasses"]["decoded_unit"] * plain["Eyeglasses"])
    edited = draws_strong_codes(codes[40:] + scaled["Eyeglasses"])
    assert edited.mean().item() == pytest.approx(draws_strong_codes(codes[:40]).mean().item(), abs=0.01)
    _, info = compute_directions(codes, {"Eyeglasses": wearer}, decode=linear)
    assert info["Eyeglasses"]["decoded_unit"] == pytest.approx(1.0, abs=0.002)


def test_the_frame_colour_unit_is_measured_over_the_eye_rows():
    # Two-row pictures: row 0 is the eyes, where the frames' lightness (coordinate 0) is drawn
    # only from strong codes, as above; row 1 is the skin (coordinate 1), drawn linearly, which
    # the light-framed group also has lighter. Over the eye row the unit is 1.25; over the whole
    # picture the linear skin row pulls it to 1.1875 ((1.5 (2k - 1) + k) / 3.25 = 1).
    light = torch.tensor([1.0] * 40 + [0.0] * 40)
    codes = torch.stack([torch.tensor([4.0, 0.0] * 20 + [0.0] * 40), light], 1)

    def draws(z):
        return torch.stack([torch.relu(z[:, 0] - 1), z[:, 1]], 1).view(-1, 1, 2, 1)

    attributes = {"Eyeglasses": torch.ones(80)}
    _, info = compute_directions(codes, attributes, frame_light=light, decode=draws, eye_rows=slice(0, 1))
    assert info["frame_light"]["decoded_unit"] == pytest.approx(1.25, abs=0.002)
    _, info = compute_directions(codes, attributes, frame_light=light, decode=draws)
    assert info["frame_light"]["decoded_unit"] == pytest.approx(1.1875, abs=0.002)
