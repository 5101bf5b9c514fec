"""Noise schedules: diffusers' discrete beta schedules and EDM's (Karras et al. 2022) sigma steps.

`noise_schedule(name, num_train_timesteps)` gives the same `betas` and `alphas_cumprod` as
diffusers' schedulers built with `beta_schedule=name` (their float32 values); `karras_sigmas`
gives the time steps of EDM's samplers (`edm/generate.py`):

  sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i < n,

followed by sigma_n = 0.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
  """A discrete variance-preserving schedule: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

  Arrays are float32 NumPy of length `num_train_timesteps`, indexed by the timestep t.
  """
  name: str
  betas: np.ndarray
  alphas_cumprod: np.ndarray

  @property
  def num_train_timesteps(self) -> int:
    return len(self.betas)

  @property
  def alphas(self) -> np.ndarray:
    """sqrt(abar_t): the signal scale of x_t (not diffusers' `alphas`, which are 1 - beta_t)."""
    return np.sqrt(self.alphas_cumprod.astype(np.float64)).astype(np.float32)

  @property
  def sigmas(self) -> np.ndarray:
    """sqrt(1 - abar_t): the noise scale of x_t."""
    return np.sqrt(1.0 - self.alphas_cumprod.astype(np.float64)).astype(np.float32)


def _cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
  """Nichol & Dhariwal's cosine schedule as betas of consecutive alpha_bar ratios, capped."""

  def alpha_bar(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

  return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
                   for i in range(num_steps)], np.float64)


def noise_schedule(name: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                   beta_end: float = 0.02) -> NoiseSchedule:
  """betas and alphas_cumprod of diffusers' `beta_schedule=name` (DDPM's defaults for the range).

  `scaled_linear` is Stable Diffusion's (use beta_start=0.00085, beta_end=0.012 for its values).
  Betas are built in float32 where diffusers builds them in float32 (linear, scaled_linear) and
  in float64 then rounded where it does (squaredcos_cap_v2); the cumulative product runs in
  float32, as torch.cumprod does on float32 tensors.
  """
  if name not in BETA_SCHEDULES:
    raise ValueError(f"unknown noise schedule '{name}'; valid: {', '.join(BETA_SCHEDULES)}")
  if num_train_timesteps < 2:
    raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
  if name == "linear":
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
  elif name == "scaled_linear":
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float32) ** 2
  else:
    betas = _cosine_betas(num_train_timesteps).astype(np.float32)
  alphas_cumprod = np.cumprod(1.0 - betas, dtype=np.float32)
  return NoiseSchedule(name, betas, alphas_cumprod)


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0) -> np.ndarray:
  """EDM's n noise levels from sigma_max down to sigma_min, then a final 0 (n + 1 values, float64)."""
  if n < 1:
    raise ValueError(f"karras_sigmas needs n >= 1 steps, got {n}")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"karras_sigmas needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
  ramp = np.arange(n, dtype=np.float64) / max(n - 1, 1)
  inv_rho_max, inv_rho_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
  sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
  return np.concatenate([sigmas, [0.0]])
