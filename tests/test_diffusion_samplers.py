"""Schedules, the DDIM/DDPM steps and DPM-Solver++ against diffusers; EDM's sigmas; sampler behaviour.

Reference numbers come from diffusers 0.42.1 (torch 2.13.0 CPU), written once by
tests/diffusion_reference/make_fixtures.py into tests/diffusion_reference/diffusers_fixtures.npz.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import diffusion
from jaxlab.diffusion import samplers

REF = np.load(pathlib.Path(__file__).parent / "diffusion_reference" / "diffusers_fixtures.npz")
SCHEDULE_RANGES = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (1e-4, 0.02)}


def test_fixtures_come_from_the_stated_diffusers_version():
  assert str(REF["diffusers_version"]) == "0.42.1"


@pytest.mark.parametrize("name", sorted(SCHEDULE_RANGES))
def test_noise_schedule_equals_diffusers(name):
  start, end = SCHEDULE_RANGES[name]
  s = diffusion.noise_schedule(name, 1000, beta_start=start, beta_end=end)
  np.testing.assert_allclose(s.betas, REF[f"{name}/betas"], rtol=2e-6, atol=0)
  np.testing.assert_allclose(s.alphas_cumprod, REF[f"{name}/alphas_cumprod"], rtol=2e-6, atol=1e-12)


def test_noise_schedule_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown noise schedule 'cosine'; valid: linear, scaled_linear"):
    diffusion.noise_schedule("cosine")


def test_karras_sigmas_follow_edms_formula():
  n, sigma_min, sigma_max, rho = 18, 0.002, 80.0, 7.0
  sigmas = diffusion.karras_sigmas(n, sigma_min, sigma_max, rho)
  # edm/generate.py: t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0.
  i = np.arange(n)
  expected = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-14)
  assert sigmas[-1] == 0.0 and sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)


@pytest.mark.parametrize("n", [50, 7])
def test_ddim_timesteps_and_step_equal_diffusers(n):
  schedule = diffusion.noise_schedule("linear")
  sample, out, noise = (jnp.asarray(REF[f"step/{k}"]) for k in ("sample", "model_output", "noise"))
  expected_t = REF[f"ddim{n}/timesteps"]
  for prediction in ("epsilon", "v_prediction", "sample"):
    for eta in (0.0, 0.5):
      for clip in (0, 1):
        ddim = diffusion.DDIM(schedule, n, eta, clip_sample=1.0 if clip else None)
        np.testing.assert_array_equal(ddim.timesteps, expected_t)
        step = jax.jit(lambda o, t, x, ddim=ddim, p=prediction: ddim.step(o, t, x, prediction_type=p,
                                                                           variance_noise=noise))
        got = np.stack([step(out, int(t), sample) for t in expected_t[[0, n // 2, n - 1]]])
        np.testing.assert_allclose(got, REF[f"ddim{n}/{prediction}/eta{eta}/clip{clip}"], rtol=2e-5,
                                   atol=2e-5, err_msg=f"{prediction} eta={eta} clip={clip}")


@pytest.mark.parametrize("n", [1000, 50])
def test_ddpm_ancestral_step_equals_diffusers(n):
  ddpm = diffusion.DDPMSampler(diffusion.noise_schedule("linear"), n)
  np.testing.assert_array_equal(ddpm.timesteps, REF[f"ddpm{n}/timesteps"])
  sample, out = jnp.asarray(REF["step/sample"]), jnp.asarray(REF["step/model_output"])
  abar = REF["linear/alphas_cumprod"].astype(np.float64)
  for k, t in enumerate(ddpm.timesteps[[0, n // 2, n - 2]]):
    noise = REF[f"ddpm{n}/noise"][k]
    got = np.asarray(ddpm.step(out, int(t), sample, variance_noise=jnp.asarray(noise)))
    # The posterior in float64 from the same alphas_cumprod.
    a_t, a_s = abar[t], abar[t - 1000 // n]
    x, eps = (np.asarray(v, np.float64) for v in (sample, out))
    x0, beta = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), 1 - a_t / a_s
    exact = (np.sqrt(a_s) * beta * x0 + np.sqrt(a_t / a_s) * (1 - a_s) * x) / (1 - a_t) + np.sqrt(
        (1 - a_s) / (1 - a_t) * beta) * noise
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)
    # diffusers forms beta_t = 1 - abar_t / abar_{t-1} in float32, which keeps ~3 digits at t = 1
    # (beta_1 ~ 1e-4): there it is ~1e-4 from the float64 value, elsewhere equal to float32 precision.
    tolerance = 2e-4 if t < 10 else 2e-5
    np.testing.assert_allclose(got, REF[f"ddpm{n}/prev_sample"][k], rtol=tolerance, atol=tolerance)


def test_dpm_solver_pp_2m_trajectory_equals_diffusers():
  # DPMSolverMultistepScheduler's "leading" spacing differs from DDIM's: give its timesteps.
  grid = diffusion.timestep_grid(diffusion.noise_schedule("linear"), timesteps=REF["dpmpp10/timesteps"])
  solver = diffusion.DPMSolverMultistep(grid)
  alphas, sigmas = jnp.asarray(solver.grid.alphas), jnp.asarray(solver.grid.sigmas)

  def denoise(x, i):  # the same analytic epsilon "network" as the fixture script
    eps = 0.3 * x + 0.1 * jnp.sin(3.0 * x)
    return (x - sigmas[i] * eps) / alphas[i], eps

  got = jax.jit(solver.run, static_argnums=0)(denoise, jnp.asarray(REF["step/sample"]), jax.random.key(0))
  np.testing.assert_allclose(got, REF["dpmpp10/final"], rtol=1e-4, atol=1e-4)
  assert solver.nfe == 10


def _gaussian_data_denoiser(grid, data_std):
  """The exact x0 prediction when x0 ~ N(0, data_std^2): E[x0 | x] = a s_d^2 / (a^2 s_d^2 + s^2) x."""
  alphas, sigmas = jnp.asarray(grid.alphas), jnp.asarray(grid.sigmas)

  def denoise(x, i):
    a, s = alphas[i], sigmas[i]
    x0 = a * data_std**2 / (a**2 * data_std**2 + s**2) * x
    return x0, (x - a * x0) / s

  return denoise


@pytest.mark.parametrize("formulation", [diffusion.EDM(), diffusion.FlowMatching(),
                                         diffusion.DDPM(diffusion.noise_schedule("linear"))])
def test_ode_samplers_converge_to_the_exact_flow_at_their_order(formulation):
  """For Gaussian data the probability-flow ODE maps x_T to x_T * s_d / sqrt(a_T^2 s_d^2 + s_T^2).

  Doubling the steps halves Euler's error (first order) and cuts Heun's about fourfold.
  """
  data_std, errors = 0.5, {}
  for steps in (20, 40):
    grid = formulation.grid(steps)
    x_t = jax.random.normal(jax.random.key(1), (64, 4, 4, 1)) * grid.init_sigma
    exact = x_t * data_std / np.sqrt(grid.alphas[0] ** 2 * data_std**2 + grid.sigmas[0] ** 2)
    for name in ("ddim", "euler", "heun", "dpmpp_2m"):
      sampler = samplers.create(name, grid)
      got = jax.jit(sampler.run, static_argnums=0)(_gaussian_data_denoiser(grid, data_std), x_t, jax.random.key(2))
      errors[name, steps] = float(jnp.max(jnp.abs(got - exact)) / jnp.max(jnp.abs(exact)))
  assert errors["ddim", 40] == pytest.approx(errors["euler", 40], abs=1e-6)  # the same update
  assert 1.7 < errors["euler", 20] / errors["euler", 40] < 2.3, errors
  assert errors["heun", 20] / errors["heun", 40] > 2.8, errors
  assert errors["heun", 40] < 0.15 * errors["euler", 40], errors
  if formulation.name != "ddpm":  # DDPM's "leading" grid jumps far in log-SNR on its last steps,
    # where the two-step extrapolation loses to Euler (diffusers' solver does the same).
    assert errors["dpmpp_2m", 20] / errors["dpmpp_2m", 40] > 2.0 or errors["dpmpp_2m", 40] < 0.01, errors
    assert errors["dpmpp_2m", 40] < 0.2 * errors["euler", 40], errors


def test_heun_counts_edms_35_network_evaluations_for_18_steps():
  assert samplers.Heun(diffusion.EDM().grid(18)).nfe == 35
  # Flow matching starts at alpha = 0, where the slope is infinite: no correction on that step.
  assert samplers.Heun(diffusion.FlowMatching().grid(18)).nfe == 34
  assert samplers.Euler(diffusion.EDM().grid(18)).nfe == 18


def test_stochastic_samplers_match_the_data_distribution_and_are_deterministic_per_key():
  data_std, grid = 0.5, diffusion.EDM().grid(400)  # ancestral steps are exact only as they get small
  denoise = _gaussian_data_denoiser(grid, data_std)
  for name, kwargs in (("ddpm", {}), ("ddim", {"eta": 1.0})):
    sampler = samplers.create(name, grid, **kwargs)
    x_t = sampler.initial_noise(jax.random.key(0), (4096, 2, 2, 1))
    run = jax.jit(sampler.run, static_argnums=0)
    a, b = run(denoise, x_t, jax.random.key(3)), run(denoise, x_t, jax.random.key(3))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a, run(denoise, x_t, jax.random.key(4)))
    assert float(jnp.std(a)) == pytest.approx(data_std, rel=0.05), name
    chex.assert_shape(a, (4096, 2, 2, 1))


def test_sampler_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown sampler 'plms'; valid: ddpm, ddim, euler, heun, dpmpp_2m"):
    samplers.create("plms", diffusion.EDM().grid(4))


def test_classifier_free_guidance_extrapolates_from_the_null_label_in_one_call():
  calls = []

  def net(x, time, labels):
    calls.append(labels)
    return x * 0 + labels[:, None, None, None].astype(jnp.float32) + time[:, None, None, None]

  guided = diffusion.guided(net, null_label=10, guidance=3.0)
  out = guided(jnp.zeros((2, 1, 1, 1)), jnp.array([0.5, 0.5]), jnp.array([2, 4]))
  # uncond + w (cond - uncond) = (10 + t) + 3 ((label + t) - (10 + t))
  np.testing.assert_allclose(out.ravel(), [10.5 + 3 * (2 - 10), 10.5 + 3 * (4 - 10)])
  assert len(calls) == 1 and calls[0].tolist() == [2, 4, 10, 10]
  assert diffusion.guided(net, 10, 1.0) is net
