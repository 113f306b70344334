"""The ELBO's pieces against independent computations."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vae_demo.model import reparameterize
from vae_demo.objective import (
    bits_per_dim,
    eye_precision,
    gaussian_log_prob,
    gaussian_nll,
    kl_to_gaussian,
    kl_to_standard_normal,
    kl_warmup,
    negative_elbo,
    optimal_log_sigma,
    standard_normal_log_prob,
)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5) * 0.5
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
    closed_form = kl_to_standard_normal(mu, logvar)
    assert torch.allclose(closed_form, monte_carlo, rtol=0.02, atol=0.02)
    assert (closed_form >= 0).all()


def test_kl_is_zero_at_the_prior():
    assert kl_to_standard_normal(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0


def random_gaussian(dims: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A mean (D,) and the Cholesky factor (D, D) of a correlated covariance."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(dims, dims, generator=generator, dtype=torch.float64)
    return torch.randn(dims, generator=generator, dtype=torch.float64), torch.linalg.cholesky(
        a @ a.T / dims + 0.1 * torch.eye(dims, dtype=torch.float64)
    )


def test_kl_to_a_full_gaussian_matches_torch_distributions():
    mean, scale_tril = random_gaussian(6, seed=1)
    mu, logvar = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    q = MultivariateNormal(mu, scale_tril=torch.diag_embed(torch.exp(0.5 * logvar)))  # diagonal
    expected = kl_divergence(q, MultivariateNormal(mean, scale_tril=scale_tril))
    assert torch.allclose(kl_to_gaussian(mu, logvar, mean, scale_tril), expected, rtol=1e-9)
    # The standard normal is the special case the training objective uses.
    assert torch.allclose(
        kl_to_gaussian(mu, logvar, torch.zeros(6).double(), torch.eye(6).double()), kl_to_standard_normal(mu, logvar)
    )


def test_gaussian_log_densities_match_torch_distributions():
    mean, scale_tril = random_gaussian(5, seed=2)
    z = torch.randn(7, 5, dtype=torch.float64)
    expected = MultivariateNormal(mean, scale_tril=scale_tril).log_prob(z)
    assert torch.allclose(gaussian_log_prob(z, mean, scale_tril), expected, rtol=1e-9)
    assert torch.allclose(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(1), rtol=1e-9)


def test_gradients_flow_through_the_reparameterisation():
    mu = torch.zeros(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    z = reparameterize(mu, logvar)
    (z**2).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_reparameterised_samples_have_the_posterior_moments():
    torch.manual_seed(0)
    mu, logvar = torch.full((100_000, 1), 2.0), torch.full((100_000, 1), math.log(9.0))
    z = reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(2.0, abs=0.05)
    assert z.std().item() == pytest.approx(3.0, abs=0.05)


def test_gaussian_nll_is_the_normal_log_density():
    x, x_hat = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    log_sigma = torch.tensor(-1.3)
    expected = -Normal(x_hat, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_nll(x, x_hat, log_sigma), expected, rtol=1e-5)


def test_optimal_sigma_minimises_the_gaussian_nll():
    torch.manual_seed(0)
    x, x_hat = torch.rand(8, 3, 8, 8), torch.rand(8, 3, 8, 8)
    best = optimal_log_sigma(x, x_hat)
    nll = lambda s: gaussian_nll(x, x_hat, torch.tensor(s)).mean().item()  # noqa: E731
    assert nll(best.item()) < nll(best.item() + 0.05)
    assert nll(best.item()) < nll(best.item() - 0.05)


def test_fixed_half_variance_is_summed_mse_plus_a_constant():
    torch.manual_seed(0)
    x, a, b = (torch.rand(1, 3, 4, 4, dtype=torch.float64) for _ in range(3))
    log_sigma = torch.tensor(math.log(math.sqrt(0.5)), dtype=torch.float64)
    difference = gaussian_nll(x, a, log_sigma) - gaussian_nll(x, b, log_sigma)
    assert difference.item() == pytest.approx(((x - a) ** 2).sum().item() - ((x - b) ** 2).sum().item(), rel=1e-5)


@pytest.mark.parametrize("likelihood", ["gaussian_optimal", "gaussian_learned", "gaussian_fixed", "bernoulli"])
def test_negative_elbo_adds_up(likelihood):
    torch.manual_seed(0)
    x, x_hat = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8).clamp(0.01, 0.99)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    terms = negative_elbo(x, x_hat, mu, logvar, likelihood, torch.tensor(-1.0), beta=0.25)
    assert terms.loss.item() == pytest.approx(terms.reconstruction_nll.item() + 0.25 * terms.kl.item(), rel=1e-5)
    assert terms.negative_elbo.item() == pytest.approx(terms.reconstruction_nll.item() + terms.kl.item(), rel=1e-5)
    assert terms.kl.item() == pytest.approx(kl_to_standard_normal(mu, logvar).mean().item())


def test_kl_warmup_ramps_linearly_then_holds():
    assert [kl_warmup(s, 10, beta=2.0) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
    assert kl_warmup(0, 0) == 1.0


def test_bits_per_dim_adds_the_8_bit_discretisation():
    assert bits_per_dim(0.0, 100) == pytest.approx(8.0)
    assert bits_per_dim(100 * math.log(2), 100) == pytest.approx(9.0)


def test_eye_precision_has_mean_one_and_peaks_across_the_eyes():
    precision = eye_precision(64, weight=4.0, eye_y=0.45)
    assert precision.shape == (64, 64) and precision.mean().item() == pytest.approx(1.0)
    row, column = divmod(int(precision.argmax()), 64)
    assert abs(row - 0.45 * 64) <= 1 and 16 < column < 48
    assert precision[row, 32] / precision[2, 32] > 3.5  # eyes vs forehead edge
    assert torch.equal(eye_precision(8, 1.0, 0.5), torch.ones(8, 8))


def test_weighted_gaussian_nll_is_the_density_with_per_pixel_variances():
    torch.manual_seed(0)
    x, x_hat = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)
    precision = eye_precision(16, 3.0, 0.5).double()
    log_sigma = torch.tensor(-1.5, dtype=torch.float64)
    expected = -Normal(x_hat, log_sigma.exp() / precision.sqrt()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_nll(x, x_hat, log_sigma, precision), expected)
    best = optimal_log_sigma(x, x_hat, precision).item()
    nll = lambda s: gaussian_nll(x, x_hat, torch.tensor(s, dtype=torch.float64), precision).mean().item()  # noqa: E731
    assert nll(best) < nll(best + 0.05) and nll(best) < nll(best - 0.05)
