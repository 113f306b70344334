"""The extended evaluation: the IWAE bound, KL per dimension, the feature-space metrics, and the command."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from torch.distributions import MultivariateNormal, Normal

from vae_demo.classifier import AttributeClassifier
from vae_demo.data import FaceData, load_split
from vae_demo.evaluate import (
    edit_effect,
    edit_metrics,
    end_to_end_change,
    evenness,
    frechet_distance,
    iwae_bound,
    kl_per_dim,
    main,
    model_pass,
    plot_kl_per_dim,
    posterior,
    precision_recall,
    ranks,
    spearman,
    summarize,
)
from vae_demo.guide import HELD_GLASSES_STRENGTH, OWN_STRENGTH_GRID, SEEN
from vae_demo.images import eye_band, uint8_to_float
from vae_demo.latent_stats import LatentStats
from vae_demo.model import ConvVAE, HubVAE
from vae_demo.objective import kl_to_standard_normal, negative_elbo, standard_normal_log_prob


@pytest.fixture(scope="module")
def tiny_model(lfw_root) -> ConvVAE:
    """A 32 px model trained for a few steps (so its codes carry information), with latent statistics."""
    torch.manual_seed(0)
    model = ConvVAE(image_size=32, channels=(8, 16, 32), latent_dim=8, res_blocks=1)
    train = load_split(lfw_root, "train", 32)
    x = uint8_to_float(train.images)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        batch = x[torch.randint(0, len(x), (32,))]
        recon, mu, logvar = model(batch)
        loss = negative_elbo(batch, recon, mu, logvar, "gaussian_optimal").loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    codes, logvar = posterior(model, train.images)
    model.latent_stats = LatentStats.fit(codes, train.attributes, train.frame_light, logvar=logvar)
    return model


@pytest.fixture(scope="module")
def split_images(lfw_root) -> torch.Tensor:
    return load_split(lfw_root, "test", 32).images


def test_iwae_matches_a_direct_computation(tiny_model, split_images):
    # batch_size 5 with k = 4: decoder chunks of 5 codes straddle images.
    k, log_sigma, batch_size = 4, -2.0, 5
    stats = tiny_model.latent_stats
    priors = {"standard": standard_normal_log_prob, "fitted": stats.log_prob}
    bounds = iwae_bound(tiny_model, split_images, log_sigma, k, batch_size=batch_size, seed=3, priors=priors)
    fitted_prior = MultivariateNormal(stats.mean.double(), scale_tril=stats.cholesky(torch.float64))
    generator = torch.Generator().manual_seed(3)
    eps = torch.cat(
        [torch.randn((len(split_images[i : i + batch_size]), k, 8), generator=generator) for i in range(0, 24, 5)]
    )
    x = uint8_to_float(split_images)
    with torch.no_grad():
        mu, logvar = tiny_model.encode(x)
        std = torch.exp(0.5 * logvar)
        expected = {"standard": [], "fitted": []}
        for n in range(len(x)):
            z = mu[n] + std[n] * eps[n]  # (k, D)
            log_likelihood = Normal(tiny_model.decode(z), math.exp(log_sigma)).log_prob(x[n]).flatten(1).sum(1)
            log_posterior = Normal(mu[n], std[n]).log_prob(z).sum(1)
            log_priors = {"standard": Normal(0.0, 1.0).log_prob(z).sum(1), "fitted": fitted_prior.log_prob(z.double())}
            for name, log_prior in log_priors.items():
                log_w = log_likelihood.double() + log_prior.double() - log_posterior.double()
                expected[name].append(torch.logsumexp(log_w, 0) - math.log(k))
    for name, bound in bounds.items():
        assert torch.allclose(bound, torch.stack(expected[name]), rtol=1e-5, atol=1e-2), name
    # The codes lie off the middle of N(0, I), so the fitted prior explains them better.
    assert bounds["fitted"].mean() > bounds["standard"].mean()
    again = iwae_bound(tiny_model, split_images, log_sigma, k, batch_size=batch_size, seed=3)
    assert list(again) == ["standard"] and torch.equal(again["standard"], bounds["standard"])


def test_iwae_is_below_the_elbo_and_tightens_with_k(tiny_model, split_images):
    result = model_pass(tiny_model, split_images, seed=0)
    metrics = summarize(result)
    log_sigma = metrics["decoder_log_sigma"]
    priors = {"standard": standard_normal_log_prob, "fitted_prior": tiny_model.latent_stats.log_prob}
    one = iwae_bound(tiny_model, split_images, log_sigma, 1, seed=0, priors=priors)
    sixteen = iwae_bound(tiny_model, split_images, log_sigma, 16, seed=0, priors=priors)
    metrics |= summarize(result, stats=tiny_model.latent_stats)
    for name, key in (("standard", "neg_elbo_nats"), ("fitted_prior", "neg_elbo_fitted_prior_nats")):
        kl = metrics["kl_nats" if name == "standard" else "kl_fitted_prior_nats"]
        one_bound, sixteen_bound = -one[name].mean().item(), -sixteen[name].mean().item()
        # k = 1 draws the same noise as model_pass: the same reconstruction term, and a Monte
        # Carlo estimate of the KL instead of its closed form, so the two differ by KL noise only.
        assert one_bound == pytest.approx(metrics[key], abs=0.2 * kl), name
        assert math.isfinite(sixteen_bound) and sixteen_bound < one_bound
        assert sixteen_bound <= metrics[key] + 1.0
    assert metrics["neg_elbo_fitted_prior_nats"] < metrics["neg_elbo_nats"]
    assert summarize(result)["neg_elbo_fitted_prior_nats"] is None


def test_kl_per_dim_adds_up_to_the_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(50, 6), torch.randn(50, 6)
    per_dim = kl_per_dim(mu, logvar)
    assert per_dim.shape == (6,) and (per_dim >= 0).all()
    assert per_dim.sum().item() == pytest.approx(kl_to_standard_normal(mu, logvar).mean().item(), rel=1e-5)
    assert kl_per_dim(torch.zeros(3, 2), torch.zeros(3, 2)).tolist() == [0.0, 0.0]


def test_kl_plot_writes_a_png(tmp_path):
    path = plot_kl_per_dim({"kl_per_dim": [0.5, 3.0, 1.0]}, tmp_path / "kl.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_kl_per_dim(torch.rand(256), tmp_path / "kl2.png").stat().st_size > 1000


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    torch.manual_seed(0)
    a = (torch.randn(500, 4) @ torch.randn(4, 4)).double()  # in float32, a + 2 would round
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, abs=1e-8)  # |shift|^2, covariances equal
    assert frechet_distance(a, a + 2.0) == pytest.approx(16.0, abs=1e-8)
    # b = 2a: |mean|^2 + tr(S) + 4 tr(S) - 2 tr(2 S) = |mean|^2 + tr(S)
    expected = a.double().mean(0).pow(2).sum() + torch.cov(a.double().T).trace()
    assert frechet_distance(a, 2 * a) == pytest.approx(float(expected), rel=1e-8)


def test_precision_and_recall_of_identical_far_and_mode_dropping_sets():
    torch.manual_seed(0)
    real = torch.randn(300, 4)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)
    precision, recall = precision_recall(real, real[real[:, 0] > 0])  # realistic, but half the data
    assert precision == 1.0 and recall < 0.8
    assert all(math.isnan(v) for v in precision_recall(real, real[:3]))


def test_spearman_of_monotone_sequences_and_ranks_of_ties():
    t = torch.arange(16.0)
    assert spearman(t, t).item() == pytest.approx(1.0)
    assert spearman(torch.exp(t / 3), t).item() == pytest.approx(1.0)  # any increasing function
    assert spearman(t.flip(0), t).item() == pytest.approx(-1.0)
    assert ranks(torch.tensor([3.0, 1.0, 2.0, 2.0])).tolist() == [4.0, 1.0, 2.5, 2.5]
    batch = torch.stack([t, -t, torch.ones(16)])
    result = spearman(batch, t.expand(3, -1))
    assert result[:2].tolist() == pytest.approx([1.0, -1.0]) and math.isnan(result[2])  # constant: undefined


def test_evenness_of_evenly_and_unevenly_spaced_paths():
    direction = torch.randn(5)
    even = torch.linspace(0, 1, 16)[:, None] * direction
    assert evenness(even).item() == pytest.approx(1.0)
    uneven = torch.tensor([0.0, 1.0, 2.0, 4.0])[:, None] * direction  # steps 1, 1, 2: max 2 over mean 4/3
    assert evenness(torch.stack([even[:4], uneven])).tolist() == pytest.approx([1.0, 1.5])


def test_end_to_end_change_tells_the_eye_band_from_the_rest():
    class Painter(HubVAE):
        """Paints code entry 0 across the eye band and entry 1 everywhere else."""

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to report

        def decode(self, z):
            rows = torch.zeros(64, dtype=torch.bool)
            rows[eye_band(64)] = True
            band = rows.view(1, 1, 64, 1)
            return torch.where(band, z[:, 0, None, None, None], z[:, 1, None, None, None]).expand(-1, 3, 64, 64)

    frames_only = [(torch.tensor([0.2, 0.5]), torch.tensor([0.8, 0.5]))] * 3
    assert end_to_end_change(Painter(), frames_only, batch_size=2) == pytest.approx(
        {"change_in_eye_band": 0.6, "change_elsewhere": 0.0}
    )
    everything = [(torch.tensor([0.2, 0.5]), torch.tensor([0.4, 0.6]))]
    assert end_to_end_change(Painter(), everything) == pytest.approx(
        {"change_in_eye_band": 0.2, "change_elsewhere": 0.1}
    )


def test_a_flip_that_undoes_the_classifiers_mistake_is_not_a_wrong_call():
    class Painter(HubVAE):
        """Paints code entry 0 into the red channel and entry 1 into the green one."""

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to report
            self.latent_stats = LatentStats(torch.zeros(2), torch.eye(2), {"Eyeglasses": torch.tensor([1.0, 0.0])})

        def decode(self, z):
            return torch.stack([z[:, 0], z[:, 1], z[:, 1]], 1)[..., None, None].expand(-1, 3, 8, 8)

    class GlassesLookMale:
        """Calls glasses by the red channel and sex by the green one, pushed towards male by glasses."""

        attributes = ["Eyeglasses", "Male"]

        def describe(self, x, batch_size):
            red, green = x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2))
            return x.flatten(1), torch.stack([red, (green + 0.3 * red).clamp(0, 1)], 1)

    # a woman, a man called a woman, a man, a face of unknown sex; all called women but the third
    faces = torch.tensor([[0.0, 0.1], [0.0, 0.4], [0.0, 0.8], [0.0, 0.3]])
    male_labels = torch.tensor([0.0, 1.0, 1.0, float("nan")])
    effect = edit_effect(Painter(), GlassesLookMale(), faces, "Eyeglasses", 1.0, 4, male_labels=male_labels)
    assert effect["success"] == 1.0
    assert effect["male_flips"] == 0.5  # the misjudged man and the unknown face are now called men
    assert effect["male_wrong_before"] == pytest.approx(1 / 3) and effect["male_wrong_after"] == 0.0
    without_labels = edit_effect(Painter(), GlassesLookMale(), faces, "Eyeglasses", 1.0, 4)
    assert without_labels["male_wrong_before"] is None and without_labels["male_flips"] == 0.5


def test_edits_without_qualifying_faces_or_directions_report_nothing(tiny_model, split_images):
    classifier = AttributeClassifier(channels=(8, 8, 8, 8), image_size=32)
    middling = torch.full((len(split_images),), 0.5)
    data = FaceData(split_images, {"Eyeglasses": middling, "Smiling": middling}, [""] * len(split_images))
    mu = posterior(tiny_model, split_images)[0]
    edits = edit_metrics(tiny_model, classifier, data, mu, strength=1.0)
    for key in ("glasses", "smiling", "frame_light"):
        assert edits[key]["n"] == 0 and edits[key]["success"] is None
    stats = tiny_model.latent_stats
    tiny_model.latent_stats = LatentStats(stats.mean, stats.cov)  # no directions
    try:
        edits = edit_metrics(tiny_model, classifier, data, mu, strength=1.0)
    finally:
        tiny_model.latent_stats = stats
    assert edits == {"strength": 1.0, "glasses": None, "smiling": None, "frame_light": None}


def _check_numbers(value, where="metrics"):
    """Every leaf is a finite number, a string, or None where nothing was measured."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                assert value.get("n") in (0, value.get("n_undefined")), f"{where}.{key} is None"
            else:
                _check_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_numbers(item, where)
    elif not isinstance(value, str):
        assert isinstance(value, int | float) and math.isfinite(value), f"{where} = {value!r}"


def test_evaluate_command_measures_samples_edits_and_paths(tiny_model, lfw_root, tmp_path, monkeypatch):
    tiny_model.save_pretrained(tmp_path / "model")
    AttributeClassifier(channels=(8, 8, 8, 8)).save_pretrained(tmp_path / "classifier")
    torch.manual_seed(1)
    AttributeClassifier(channels=(8, 8, 8, 8)).save_pretrained(tmp_path / "guide")
    out, plot = tmp_path / "metrics.json", tmp_path / "kl.png"
    command = [sys.executable, "-m", "vae_demo.evaluate", "--model", str(tmp_path / "model")]
    command += ["--data", str(lfw_root), "--classifier", str(tmp_path / "classifier"), "--out", str(out)]
    command += ["--guide", str(tmp_path / "guide"), "--samples", "64", "--pairs", "4", "--iwae-k", "4"]
    command += ["--kl-plot", str(plot)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics == json.loads(result.stdout)
    _check_numbers(metrics)
    assert {"psnr", "neg_elbo_nats", "neg_iwae_nats", "neg_iwae_bits_per_dim", "kl_per_dim"} <= set(metrics)
    assert len(metrics["kl_per_dim"]) == 8 and metrics["iwae_k"] == 4
    assert sum(metrics["kl_per_dim"]) == pytest.approx(metrics["kl_nats"], rel=1e-4)
    assert metrics["classifier"] == str(tmp_path / "classifier")
    assert set(metrics["samples"]) == {"prior_t1.0", "fitted_t1.0", "fitted_t0.8"}
    for values in metrics["samples"].values():
        assert set(values) == {"fd", "precision", "recall"} and values["fd"] >= 0
        assert 0 <= values["precision"] <= 1 and 0 <= values["recall"] <= 1
    edits = metrics["edits"]
    assert set(edits) == {"strength", "glasses", "glasses_held", "glasses_own_strength", "smiling", "frame_light"}
    assert edits["glasses_held"]["strength"] == HELD_GLASSES_STRENGTH
    own = edits["glasses_own_strength"]
    assert own["seen"] == SEEN and own["n"] == edits["glasses"]["n"]
    assert OWN_STRENGTH_GRID[0] <= own["mean_strength"] <= OWN_STRENGTH_GRID[-1] and 0 <= own["at_largest"] <= 1
    for key in ("glasses", "glasses_held", "glasses_own_strength", "smiling", "frame_light"):
        expected = {"n", "success", "reference_rate", "male_flips", "male_wrong_before", "male_wrong_after"}
        assert expected | {"glasses_before", "glasses_after"} <= set(edits[key])
    assert edits["glasses"]["n"] > 0 and edits["frame_light"]["n"] >= edits["frame_light"]["n_hand_labelled"]
    assert edits["glasses"]["glasses_after"] == edits["glasses"]["success"]  # one call, two names
    assert edits["glasses"]["glasses_before"] == edits["glasses"]["reference_rate"]
    for key in ("glasses", "frame_light"):
        kept = metrics["kept"][key]
        assert kept["n"] > 0 and 0 <= kept["photos"] <= 1 and 0 <= kept["reconstructions"] <= 1
    assert metrics["interpolation"]["pairs"] == 4
    for method in ("lerp", "slerp"):
        summary = metrics["interpolation"][method]
        assert summary["n"] == 4 and summary["n_undefined"] == 0 and summary["mean"] >= 1
    for mode in ("two_photos", "direction"):
        summary = metrics["showcase"][mode]
        assert summary["n"] > summary["n_undefined"] and -1 <= summary["mean"] <= 1
        for seen in ("start_called_dark", "end_called_light", "frames_called_glasses"):
            assert 0 <= summary[seen] <= 1
    assert metrics["showcase"]["direction"]["change_in_eye_band"] > 0
    assert metrics["showcase"]["direction"]["change_elsewhere"] >= 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # The tables that decide between models (benchmarks/compare.py, side_by_side.py) read these keys.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from compare import ROWS, lookup
    from side_by_side import SHOWCASE_ROWS

    unread = [key for key, _, _ in (*ROWS, *SHOWCASE_ROWS) if key != "minutes" and lookup(metrics, key) is None]
    assert unread == []


def test_without_a_classifier_the_classifier_metrics_are_null(tiny_model, lfw_root, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "model")
    argv = ["--model", str(tmp_path / "model"), "--data", str(lfw_root), "--sigma-split", "test"]
    assert main([*argv, "--classifier", str(tmp_path / "none"), "--iwae-k", "0"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert "no classifier" in captured.err
    assert metrics["classifier"] is None and metrics["neg_iwae_nats"] is None
    assert all(metrics[key] is None for key in ("samples", "kept", "edits", "interpolation", "showcase"))
    assert len(metrics["kl_per_dim"]) == 8


def test_compare_reports_the_runs_it_finds(tmp_path, monkeypatch):
    """A new "ours" meets baselines trained before: the report takes every finished run in the folder."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from compare import found_runs, report

    for name in ("seed_mlp", "ours"):
        (tmp_path / name / "model").mkdir(parents=True)
    (tmp_path / "seed").mkdir()  # unfinished: no model yet
    assert found_runs(tmp_path) == ["ours", "seed_mlp"]

    results = {"ours": {"minutes": 90, "psnr": 29.5}, "seed_mlp": {"minutes": 90, "psnr": 18.6}}
    curves = {"ours": [(2.0, 22.0), (4.0, 23.6)], "seed_mlp": [(3.0, 17.0), (90.0, 18.5)]}
    text = report(results, curves, 90)
    assert "| | ours | seed MLP VAE |" in text and "seed conv VAE" not in text
    assert "| test PSNR (dB) ↑ | 29.50 | 18.60 |" in text
    assert "final val PSNR (18.50 dB) after 2 minutes" in text
