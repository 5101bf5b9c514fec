"""What a diffusion model is trained to predict, and how its output becomes a denoised sample.

Each formulation writes the noisy sample as x = alpha x0 + sigma eps and talks to a network
`net(x_in, time, labels) -> output` (float32, shaped like x):

  DDPM          discrete variance-preserving schedule; the network predicts eps, v or x0 from
                (x_t, t); loss weighting none or min-SNR-gamma (Hang et al. 2023).
  EDM           Karras et al. 2022: preconditioning D(x; sigma) = c_skip x + c_out F(c_in x,
                ln(sigma)/4); training sigmas log-normal (P_mean -1.2, P_std 1.2); loss
                weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2.
  FlowMatching  rectified flow / flow matching (Lipman et al., Liu et al. 2022): x_t =
                (1 - t) x0 + t eps, the network predicts v = eps - x0 from (x_t, 1000 t); times
                uniform or logit-normal (Esser et al. 2024).

Losses are means over pixels per example (EDM's reference sums; this only rescales the lr).
Every formulation has `loss(net, x0, labels, rng)` (per example), `level_loss` at given levels,
`predict(net, x, levels, labels) -> (x0, eps)`, `marginal(levels) -> (alpha, sigma)`, `grid(n)`
(its default sampling grid for n steps) and `eval_levels` (fixed levels at which the task
reports its loss and denoising error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion.samplers import Grid, timestep_grid, to_x0_eps
from jaxlab.diffusion.schedules import NoiseSchedule, karras_sigmas, noise_schedule

Net = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

PREDICTIONS = ("epsilon", "v_prediction", "sample")
LOSS_WEIGHTINGS = ("none", "min_snr")
TIME_SAMPLINGS = ("uniform", "logit_normal")


def _per_example_mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """A per-example value [B] shaped to broadcast against x [B, ...]."""
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


@dataclasses.dataclass(frozen=True)
class DDPM:
  schedule: NoiseSchedule
  prediction: str = "epsilon"
  loss_weighting: str = "none"
  min_snr_gamma: float = 5.0
  name = "ddpm"

  def __post_init__(self):
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"unknown prediction '{self.prediction}'; valid: {', '.join(PREDICTIONS)}")
    if self.loss_weighting not in LOSS_WEIGHTINGS:
      raise ValueError(f"unknown loss_weighting '{self.loss_weighting}'; valid: {', '.join(LOSS_WEIGHTINGS)}")

  @property
  def eval_levels(self) -> tuple[int, ...]:
    total = self.schedule.num_train_timesteps
    return tuple(int(total * f) for f in (0.1, 0.3, 0.5, 0.7, 0.9))

  def marginal(self, t):
    """(alpha, sigma) of x_t at integer timesteps t."""
    return jnp.asarray(self.schedule.alphas)[t], jnp.asarray(self.schedule.sigmas)[t]

  def predict(self, net: Net, x, level, labels):
    """(x0, eps) at integer timesteps `level` [B]."""
    alpha, sigma = (_bcast(v, x) for v in self.marginal(level))
    out = net(x, level.astype(jnp.float32), labels)
    return to_x0_eps(self.prediction, out, x, alpha, sigma)

  def level_loss(self, net: Net, x0, labels, level, noise):
    alpha, sigma = self.marginal(level)
    a, s = _bcast(alpha, x0), _bcast(sigma, x0)
    x = a * x0 + s * noise
    out = net(x, level.astype(jnp.float32), labels)
    target = {"epsilon": noise, "v_prediction": a * noise - s * x0, "sample": x0}[self.prediction]
    loss = _per_example_mean((out - target) ** 2)
    if self.loss_weighting == "min_snr":
      snr = (alpha / sigma) ** 2
      clipped = jnp.minimum(snr, self.min_snr_gamma)
      # min(SNR, gamma) on the x0 error, expressed for the predicted quantity.
      loss *= {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[self.prediction]
    return loss

  def loss(self, net: Net, x0, labels, rng):
    t_key, n_key = jax.random.split(rng)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, self.schedule.num_train_timesteps)
    return self.level_loss(net, x0, labels, t, jax.random.normal(n_key, x0.shape, x0.dtype))

  def grid(self, num_steps: int) -> Grid:
    return timestep_grid(self.schedule, num_steps)

  def level_name(self, level) -> str:
    return f"t{int(level)}"


@dataclasses.dataclass(frozen=True)
class EDM:
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  sigma_min: float = 0.002  # sampling grid (EDM's defaults)
  sigma_max: float = 80.0
  rho: float = 7.0
  name = "edm"
  eval_levels = (0.1, 0.3, 1.0, 3.0)

  def marginal(self, sigma):
    return jnp.ones_like(sigma), sigma

  def _precondition(self, sigma):
    sd2 = self.sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * self.sigma_data / jnp.sqrt(sigma**2 + sd2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sd2)
    return c_skip, c_out, c_in, jnp.log(sigma) / 4

  def denoise(self, net: Net, x, sigma, labels):
    """D(x; sigma) for per-example sigmas [B]."""
    c_skip, c_out, c_in, c_noise = self._precondition(sigma)
    out = net(_bcast(c_in, x) * x, c_noise, labels)
    return _bcast(c_skip, x) * x + _bcast(c_out, x) * out

  def predict(self, net: Net, x, level, labels):
    x0 = self.denoise(net, x, level, labels)
    return x0, (x - x0) / _bcast(level, x)

  def level_loss(self, net: Net, x0, labels, sigma, noise):
    weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
    denoised = self.denoise(net, x0 + _bcast(sigma, x0) * noise, sigma, labels)
    return weight * _per_example_mean((denoised - x0) ** 2)

  def loss(self, net: Net, x0, labels, rng):
    s_key, n_key = jax.random.split(rng)
    sigma = jnp.exp(self.p_mean + self.p_std * jax.random.normal(s_key, (x0.shape[0],)))
    return self.level_loss(net, x0, labels, sigma, jax.random.normal(n_key, x0.shape, x0.dtype))

  def grid(self, num_steps: int) -> Grid:
    sigmas = karras_sigmas(num_steps, self.sigma_min, self.sigma_max, self.rho)
    return Grid(levels=sigmas, alphas=np.ones_like(sigmas), sigmas=sigmas, init_sigma=float(sigmas[0]))

  def level_name(self, level) -> str:
    return f"sigma{level:g}"


@dataclasses.dataclass(frozen=True)
class FlowMatching:
  time_sampling: str = "uniform"
  logit_mean: float = 0.0
  logit_std: float = 1.0
  shift: float = 1.0  # sampling grid t' = shift t / (1 + (shift - 1) t), as SD3
  name = "flow"
  eval_levels = (0.1, 0.3, 0.5, 0.7, 0.9)

  def __post_init__(self):
    if self.time_sampling not in TIME_SAMPLINGS:
      raise ValueError(f"unknown time_sampling '{self.time_sampling}'; valid: {', '.join(TIME_SAMPLINGS)}")

  def marginal(self, t):
    return 1 - t, t

  def predict(self, net: Net, x, level, labels):
    v = net(x, 1000.0 * level, labels)
    t = _bcast(level, x)
    return x - t * v, x + (1 - t) * v

  def level_loss(self, net: Net, x0, labels, t, noise):
    tb = _bcast(t, x0)
    v = net((1 - tb) * x0 + tb * noise, 1000.0 * t, labels)
    return _per_example_mean((v - (noise - x0)) ** 2)

  def loss(self, net: Net, x0, labels, rng):
    t_key, n_key = jax.random.split(rng)
    if self.time_sampling == "uniform":
      t = jax.random.uniform(t_key, (x0.shape[0],))
    else:
      t = jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(t_key, (x0.shape[0],)))
    return self.level_loss(net, x0, labels, t, jax.random.normal(n_key, x0.shape, x0.dtype))

  def grid(self, num_steps: int) -> Grid:
    t = np.linspace(1.0, 0.0, num_steps + 1)
    t = self.shift * t / (1 + (self.shift - 1) * t)
    return Grid(levels=t, alphas=1 - t, sigmas=t, init_sigma=1.0)

  def level_name(self, level) -> str:
    return f"t{level:g}"


FORMULATIONS = ("ddpm", "edm", "flow")


def from_config(cfg) -> DDPM | EDM | FlowMatching:
  """The formulation of a diffusion task's config (see jaxlab.diffusion.config)."""
  if cfg.formulation == "ddpm":
    return DDPM(noise_schedule(cfg.schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end),
                cfg.prediction, cfg.loss_weighting, cfg.min_snr_gamma)
  if cfg.formulation == "edm":
    return EDM(cfg.sigma_data, cfg.p_mean, cfg.p_std, cfg.sigma_min, cfg.sigma_max, cfg.rho)
  if cfg.formulation == "flow":
    return FlowMatching(cfg.time_sampling, cfg.logit_mean, cfg.logit_std, cfg.shift)
  raise ValueError(f"unknown diffusion formulation '{cfg.formulation}'; valid: {', '.join(FORMULATIONS)}")
