"""EDM's stochastic sampler (churn) in Euler/Heun against Algorithm 2 of Karras et al. 2022 in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import diffusion
from jaxlab.diffusion import samplers

DATA_STD = 0.5
SHAPE = (16, 2, 2, 1)


def _exact_denoiser(sigma, x):
  """D(x; sigma) for data ~ N(0, DATA_STD^2): the optimal denoiser, in closed form."""
  return x * DATA_STD**2 / (sigma**2 + DATA_STD**2)


def _jax_denoiser(grid):
  """denoise(x, i[, level]) -> (x0, eps), as generate() builds it from a formulation."""
  sigmas = jnp.asarray(grid.sigmas, jnp.float32)

  def denoise(x, i, level=None):
    sigma = sigmas[i] if level is None else level
    x0 = _exact_denoiser(sigma, x)
    return x0, (x - x0) / sigma

  return denoise


def _algorithm_2(t, x, noises, s_churn, s_min, s_max, s_noise, second_order):
  """EDM's Algorithm 2 line by line, float64; `noises[i]` is the N(0, I) draw of step i."""
  n = len(t) - 1
  for i in range(n):
    gamma = min(s_churn / n, np.sqrt(2) - 1) if s_min <= t[i] <= s_max else 0.0
    eps = s_noise * noises[i]  # eps_i ~ N(0, S_noise^2 I)
    t_hat = t[i] + gamma * t[i]
    x_hat = x + np.sqrt(t_hat**2 - t[i] ** 2) * eps
    d = (x_hat - _exact_denoiser(t_hat, x_hat)) / t_hat
    x = x_hat + (t[i + 1] - t_hat) * d
    if second_order and t[i + 1] != 0:
      d_next = (x - _exact_denoiser(t[i + 1], x)) / t[i + 1]
      x = x_hat + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d_next)
  return x


@pytest.mark.parametrize("name", ["heun", "euler"])
def test_churned_sampler_equals_edms_algorithm_2(name):
  grid = diffusion.EDM().grid(12)
  # EDM's ImageNet-64 setting, with a window that leaves the largest and smallest sigmas unchurned.
  churn = samplers.Churn(s_churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.003)
  sampler = samplers.create(name, grid, churn=churn)
  x_t = sampler.initial_noise(jax.random.key(0), SHAPE)
  rng = jax.random.key(1)
  got = jax.jit(sampler.run, static_argnums=0)(_jax_denoiser(grid), x_t, rng)
  # The sampler draws step i's noise from fold_in(rng, i); the reference gets the same draws.
  noises = [np.asarray(jax.random.normal(jax.random.fold_in(rng, i), SHAPE), np.float64)
            for i in range(grid.num_steps)]
  expected = _algorithm_2(np.asarray(grid.sigmas, np.float64), np.asarray(x_t, np.float64), noises,
                          churn.s_churn, churn.s_min, churn.s_max, churn.s_noise, second_order=name == "heun")
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
  deterministic = jax.jit(samplers.create(name, grid).run, static_argnums=0)(_jax_denoiser(grid), x_t, rng)
  assert np.abs(np.asarray(got) - np.asarray(deterministic)).max() > 1e-2  # the churn changed the samples
  assert sampler.nfe == samplers.create(name, grid).nfe  # churn adds no network evaluations


def test_zero_churn_is_the_deterministic_sampler_and_bad_settings_fail():
  grid = diffusion.EDM().grid(6)
  x_t = samplers.Heun(grid).initial_noise(jax.random.key(0), SHAPE)
  plain = samplers.Heun(grid).run(_jax_denoiser(grid), x_t, jax.random.key(1))
  zero = samplers.Heun(grid, churn=samplers.Churn(s_churn=0.0)).run(_jax_denoiser(grid), x_t, jax.random.key(1))
  np.testing.assert_array_equal(plain, zero)
  with pytest.raises(ValueError, match="Churn needs an EDM grid"):
    samplers.Heun(diffusion.FlowMatching().grid(6), churn=samplers.Churn(s_churn=10.0))
  with pytest.raises(ValueError, match="Churn needs s_churn >= 0"):
    samplers.Churn(s_churn=-1.0)
