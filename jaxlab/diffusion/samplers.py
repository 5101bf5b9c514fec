"""Samplers over a noise-level grid, each run as one compiled loop (`lax.fori_loop`).

Every formulation (DDPM, EDM, flow matching) writes its noisy sample as x = alpha x0 + sigma eps,
so one sampler serves them all: it walks a `Grid` of levels from noisiest to clean, asks a
`denoise(x, i) -> (x0, eps)` function for the prediction at level i, and moves to level i + 1.

  DDPM    ancestral sampling from the Gaussian posterior q(x_s | x_t, x0) (Ho et al. 2020).
  DDIM    Song et al. 2021, with `eta` (0 deterministic, 1 as DDPM); for a `NoiseSchedule`
          its `timesteps` and `step` equal diffusers' DDIMScheduler (steps_offset=0,
          set_alpha_to_one=True, timestep_spacing="leading").
  Euler   Karras et al. 2022's first-order ODE step in the scaled variables x/alpha, sigma/alpha
          (the same update as DDIM with eta=0).
  Heun    EDM's second-order ODE sampler: Euler, then the trapezoidal correction, except into
          sigma = 0 (EDM's last step) and out of alpha = 0 (flow matching's t = 1), where the
          slope is not finite; 18 steps are EDM's 35 network evaluations.
          Euler and Heun take EDM's stochastic "churn" (`Churn`, Algorithm 2) on EDM grids.
  DPM-Solver++(2M)  Lu et al. 2022's multistep data-prediction solver (diffusers' "midpoint"
          variant), first order on the first step and into sigma = 0.

`nfe` is the number of network evaluations per sample (classifier-free guidance evaluates the
network on a doubled batch; that is still one evaluation per step here, as papers count it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion.schedules import NoiseSchedule

# denoise(x, i) -> (x0, eps) predicted at grid level i; samplers with churn also call
# denoise(x, i, level) at a level between grid levels i - 1 and i (EDM's raised sigma).
Denoiser = Callable[..., tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Grid:
  """Noise levels from noisiest (index 0) to clean (index n): x_i = alphas[i] x0 + sigmas[i] eps.

  `levels` are the formulation's own units (DDPM timesteps, EDM sigmas, flow-matching times);
  the last entry is the clean end (sigma 0) and is never given to the network. `init_sigma` is
  the standard deviation of the starting noise. Samplers derive their per-step coefficients from
  these in float64 (differences such as sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2 cancel badly in
  float32) and run the loop in float32.
  """
  levels: np.ndarray
  alphas: np.ndarray
  sigmas: np.ndarray
  init_sigma: float = 1.0

  def __post_init__(self):
    if not len(self.levels) == len(self.alphas) == len(self.sigmas) >= 2:
      raise ValueError("a Grid needs levels, alphas and sigmas of one length >= 2")

  @property
  def num_steps(self) -> int:
    return len(self.levels) - 1


def timestep_grid(schedule: NoiseSchedule, num_inference_steps: int | None = None, *,
                  timesteps=None) -> Grid:
  """A grid over a discrete schedule's timesteps, ending at the clean sample (abar = 1).

  By default diffusers' "leading" timesteps, round(arange(n) * (T // n))[::-1], as
  DDIMScheduler/DDPMScheduler.set_timesteps with steps_offset=0: the step after timestep t goes
  to t - T // n, and below 0 to alpha_bar = 1 (set_alpha_to_one=True). Or explicit decreasing
  `timesteps`, followed by the clean end. The clean end's level is written as -1.
  """
  total = schedule.num_train_timesteps
  if timesteps is None:
    if num_inference_steps is None or not 1 <= num_inference_steps <= total:
      raise ValueError(f"num_inference_steps must be in [1, {total}], got {num_inference_steps}")
    ratio = total // num_inference_steps
    timesteps = (np.arange(num_inference_steps) * ratio).round()[::-1].astype(np.int64)
    last = timesteps[-1] - ratio
  else:
    timesteps = np.asarray(timesteps, np.int64)
    if timesteps.ndim != 1 or np.any(np.diff(timesteps) >= 0) or timesteps.min() < 0 or timesteps.max() >= total:
      raise ValueError(f"timesteps must decrease within [0, {total}), got {timesteps.tolist()}")
    last = -1
  levels = np.concatenate([timesteps, [last if last >= 0 else -1]])
  abar = schedule.alphas_cumprod.astype(np.float64)
  abar_path = np.where(levels >= 0, abar[np.maximum(levels, 0)], 1.0)
  return Grid(levels=levels, alphas=np.sqrt(abar_path), sigmas=np.sqrt(1.0 - abar_path), init_sigma=1.0)


def to_x0_eps(prediction_type: str, model_output: jax.Array, sample: jax.Array,
              alpha: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(x0, eps) from a variance-preserving model output: 'epsilon', 'v_prediction' or 'sample'."""
  if prediction_type == "epsilon":
    return (sample - sigma * model_output) / alpha, model_output
  if prediction_type == "v_prediction":  # v = alpha eps - sigma x0 (Salimans & Ho 2022)
    return alpha * sample - sigma * model_output, sigma * sample + alpha * model_output
  if prediction_type == "sample":
    return model_output, (sample - alpha * model_output) / sigma
  raise ValueError(f"unknown prediction_type '{prediction_type}'; valid: epsilon, v_prediction, sample")


class Sampler:
  """Shared construction and loop; subclasses define `_step` (and may override `run`)."""
  name = ""

  def __init__(self, grid: Grid | NoiseSchedule, num_inference_steps: int | None = None, *,
               clip_sample: float | None = None):
    if isinstance(grid, NoiseSchedule):
      if num_inference_steps is None:
        raise ValueError(f"{type(self).__name__}(schedule, num_inference_steps): give the number of steps")
      grid = timestep_grid(grid, num_inference_steps)
    elif num_inference_steps is not None and num_inference_steps != grid.num_steps:
      raise ValueError(f"the grid has {grid.num_steps} steps, not num_inference_steps={num_inference_steps}")
    self.grid = grid
    self.clip_sample = clip_sample
    self._alphas = jnp.asarray(grid.alphas, jnp.float32)
    self._sigmas = jnp.asarray(grid.sigmas, jnp.float32)
    a = np.asarray(grid.alphas, np.float64)
    s = np.asarray(grid.sigmas, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
      self._coef = {k: jnp.asarray(np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0), jnp.float32)
                    for k, v in self._coefficients(a[:-1], s[:-1], a[1:], s[1:]).items()}

  def _coefficients(self, a_t, s_t, a_s, s_s) -> dict[str, np.ndarray]:
    """Per-step coefficient tables (float64 in, indexed by step) for `_step`."""
    return {"a_s": a_s, "s_s": s_s}

  @property
  def timesteps(self) -> np.ndarray:
    """The levels the network is evaluated at, noisiest first (diffusers' `timesteps`)."""
    return self.grid.levels[:-1]

  @property
  def nfe(self) -> int:
    return self.grid.num_steps

  def _clip(self, x0):
    return x0 if self.clip_sample is None else jnp.clip(x0, -self.clip_sample, self.clip_sample)

  def _step(self, i, x, x0, eps, rng, noise=None):
    raise NotImplementedError

  def _index(self, timestep) -> jax.Array:
    return jnp.argmax(jnp.asarray(self.timesteps) == timestep)

  def step(self, model_output: jax.Array, timestep, sample: jax.Array, *,
           prediction_type: str = "epsilon", rng: jax.Array | None = None,
           variance_noise: jax.Array | None = None) -> jax.Array:
    """One update from `timestep` (an entry of `timesteps`) given a VP model output, like diffusers'.

    Stochastic samplers draw their noise from `rng`, or take it as `variance_noise`.
    """
    i = self._index(timestep)
    x0, eps = to_x0_eps(prediction_type, model_output, sample, self._alphas[i], self._sigmas[i])
    return self._step(i, sample, self._clip(x0), eps, rng, variance_noise)

  def initial_noise(self, rng: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return self.grid.init_sigma * jax.random.normal(rng, shape, dtype)

  def run(self, denoise: Denoiser, x: jax.Array, rng: jax.Array) -> jax.Array:
    """All steps from x at level 0 to the clean end, in one `fori_loop`."""

    def body(i, x):
      x0, eps = denoise(x, i)
      return self._step(i, x, self._clip(x0), eps, jax.random.fold_in(rng, i))

    return jax.lax.fori_loop(0, self.grid.num_steps, body, x)


def _noise_like(x, rng, noise):
  return jax.random.normal(rng, x.shape, x.dtype) if noise is None else noise


class DDPM(Sampler):
  """Ancestral sampling: x_s ~ q(x_s | x_t, x0) with the posterior variance (diffusers' fixed_small)."""
  name = "ddpm"

  def _coefficients(self, a_t, s_t, a_s, s_s):
    a_ts = a_t / a_s
    var_ts = np.maximum(s_t**2 - a_ts**2 * s_s**2, 0.0)  # variance of x_t given x_s
    return {"x": a_ts * s_s**2 / s_t**2, "x0": a_s * var_ts / s_t**2, "std": np.sqrt(var_ts) * s_s / s_t}

  def _step(self, i, x, x0, eps, rng, noise=None):
    del eps
    c = {k: v[i] for k, v in self._coef.items()}
    return c["x"] * x + c["x0"] * x0 + c["std"] * _noise_like(x, rng, noise)


class DDIM(Sampler):
  """x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, c = eta * (DDPM posterior std).

  `DDIM(noise_schedule("linear"), 50, eta)` has diffusers' DDIMScheduler `timesteps` and `step`
  (with its clip_sample=False; pass clip_sample=1.0 for its default clipping of x0).
  """
  name = "ddim"

  def __init__(self, grid, num_inference_steps=None, eta: float = 0.0, *, clip_sample=None):
    if eta < 0:
      raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    self.eta = float(eta)
    super().__init__(grid, num_inference_steps, clip_sample=clip_sample)

  def _coefficients(self, a_t, s_t, a_s, s_s):
    a_ts = a_t / a_s
    std = self.eta * (s_s / s_t) * np.sqrt(np.maximum(s_t**2 - a_ts**2 * s_s**2, 0.0))
    return {"x0": a_s, "eps": np.sqrt(np.maximum(s_s**2 - std**2, 0.0)), "std": std}

  def _step(self, i, x, x0, eps, rng, noise=None):
    c = {k: v[i] for k, v in self._coef.items()}
    x = c["x0"] * x0 + c["eps"] * eps
    return x if self.eta == 0.0 else x + c["std"] * _noise_like(x, rng, noise)


@dataclasses.dataclass(frozen=True)
class Churn:
  """EDM's stochastic sampling (Karras et al. 2022, Algorithm 2) for Euler and Heun.

  Before step i, fresh noise of std s_noise * sqrt(sigma_hat^2 - sigma_i^2) raises the sample
  from sigma_i to sigma_hat = (1 + gamma_i) sigma_i, gamma_i = min(s_churn / N, sqrt(2) - 1) for
  s_min <= sigma_i <= s_max and 0 elsewhere (N steps); the step then starts from sigma_hat. EDM's
  ImageNet-64 setting: Churn(40, 0.05, 50, 1.003); s_churn = 0 is the deterministic sampler.
  Needs a grid whose levels are its sigmas with alpha = 1 (the EDM formulation's), since the
  network is evaluated at sigma_hat, which is no grid level.
  """
  s_churn: float = 0.0
  s_min: float = 0.0
  s_max: float = float("inf")
  s_noise: float = 1.0

  def __post_init__(self):
    if self.s_churn < 0 or self.s_noise < 0 or self.s_min > self.s_max:
      raise ValueError(f"Churn needs s_churn >= 0, s_noise >= 0 and s_min <= s_max, got {self}")

  def raised_sigmas(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_hat [N], std of the added noise [N]) for the N steps of an EDM `grid`, float64."""
    sigmas, alphas, levels = (np.asarray(v, np.float64) for v in (grid.sigmas, grid.alphas, grid.levels))
    if not (np.all(alphas == 1.0) and np.array_equal(levels, sigmas)):
      raise ValueError("Churn needs an EDM grid (levels = sigmas, alpha = 1): the network is evaluated "
                       "at raised sigmas between grid levels")
    sigma = sigmas[:-1]
    gamma = np.where((self.s_min <= sigma) & (sigma <= self.s_max),
                     min(self.s_churn / grid.num_steps, np.sqrt(2.0) - 1.0), 0.0)
    sigma_hat = sigma * (1.0 + gamma)
    return sigma_hat, self.s_noise * np.sqrt(sigma_hat**2 - sigma**2)


class _Churned:
  """EDM's churn for a sampler (`churn`: a Churn, or None for the deterministic sampler)."""

  def _set_churn(self, churn: Churn | None):
    self.churn = churn if churn is not None and churn.s_churn > 0 else None
    if self.churn is not None:
      sigma_hat, noise_std = self.churn.raised_sigmas(self.grid)
      self._sigma_hat = jnp.asarray(sigma_hat, jnp.float32)
      self._noise_std = jnp.asarray(noise_std, jnp.float32)
      sigma_next = np.asarray(self.grid.sigmas[1:], np.float64)
      self._step_size = jnp.asarray(sigma_next - sigma_hat, jnp.float32)  # negative: towards 0

  def _raise(self, denoise, x, i, rng):
    """Algorithm 2, lines 4-7: (x_hat, x0, eps) at sigma_hat_i after adding the churn noise."""
    x_hat = x + self._noise_std[i] * jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    x0, eps = denoise(x_hat, i, self._sigma_hat[i])
    return x_hat, self._clip(x0), eps


class Euler(_Churned, Sampler):
  """Karras et al.'s Euler step of the probability-flow ODE in x/alpha and sigma/alpha.

  With `churn` (EDM grids), EDM's Algorithm 2 without its second-order correction.
  """
  name = "euler"

  def __init__(self, grid, num_inference_steps=None, *, churn: Churn | None = None, clip_sample=None):
    super().__init__(grid, num_inference_steps, clip_sample=clip_sample)
    self._set_churn(churn)

  def _step(self, i, x, x0, eps, rng, noise=None):
    del rng, noise
    return self._coef["a_s"][i] * x0 + self._coef["s_s"][i] * eps

  def run(self, denoise, x, rng):
    if self.churn is None:
      return super().run(denoise, x, rng)

    def body(i, x):
      _, x0, eps = self._raise(denoise, x, i, rng)
      return x0 + self._coef["s_s"][i] * eps  # = x_hat + (sigma_{i+1} - sigma_hat) eps for alpha = 1

    return jax.lax.fori_loop(0, self.grid.num_steps, body, x)


class Heun(_Churned, Sampler):
  """EDM's second-order sampler: Algorithm 1, or with `churn` (EDM grids) the stochastic Algorithm 2."""
  name = "heun"

  def __init__(self, grid, num_inference_steps=None, *, churn: Churn | None = None, clip_sample=None):
    super().__init__(grid, num_inference_steps, clip_sample=clip_sample)
    g = self.grid
    # The correction needs a finite slope at both ends: sigma_s > 0 and alpha_t > 0.
    self._correct = np.asarray((g.sigmas[1:] > 0) & (g.alphas[:-1] > 0))
    self._set_churn(churn)

  def _coefficients(self, a_t, s_t, a_s, s_s):
    # Trapezoid in the scaled variables, d(x/alpha)/d(sigma/alpha) = eps:
    # x_s = a_s (x/a_t + (s_s/a_s - s_t/a_t) (eps + eps') / 2).
    return {"a_s": a_s, "s_s": s_s, "x": a_s / a_t, "eps_mean": a_s * (s_s / a_s - s_t / a_t)}

  @property
  def nfe(self) -> int:
    return self.grid.num_steps + int(self._correct.sum())

  def run(self, denoise, x, rng):
    correct = jnp.asarray(self._correct)
    if self.churn is not None:
      return self._run_churned(denoise, x, rng, correct)

    def body(i, x):
      c = {k: v[i] for k, v in self._coef.items()}
      x0, eps = denoise(x, i)
      euler = c["a_s"] * self._clip(x0) + c["s_s"] * eps

      def corrected(euler):
        _, eps_next = denoise(euler, i + 1)
        return c["x"] * x + c["eps_mean"] * 0.5 * (eps + eps_next)

      return jax.lax.cond(correct[i], corrected, lambda e: e, euler)

    return jax.lax.fori_loop(0, self.grid.num_steps, body, x)

  def _run_churned(self, denoise, x, rng, correct):
    """EDM's Algorithm 2 (alpha = 1): Euler from (x_hat, sigma_hat), then the trapezoid."""

    def body(i, x):
      x_hat, x0, eps = self._raise(denoise, x, i, rng)
      euler = x0 + self._coef["s_s"][i] * eps

      def corrected(euler):
        _, eps_next = denoise(euler, i + 1)
        return x_hat + self._step_size[i] * 0.5 * (eps + eps_next)

      return jax.lax.cond(correct[i], corrected, lambda e: e, euler)

    return jax.lax.fori_loop(0, self.grid.num_steps, body, x)


class DPMSolverMultistep(Sampler):
  """DPM-Solver++(2M): x_s = (sigma_s/sigma_t) x + alpha_s (1 - e^-h) D with D from two x0 predictions.

  h = lambda_s - lambda_t, lambda = log(alpha/sigma); D = x0_t + (x0_t - x0_prev) / (2 r) with
  r = h_prev / h (second order), D = x0_t on the first step, into sigma = 0 and after alpha = 0.
  """
  name = "dpmpp_2m"

  def __init__(self, grid, num_inference_steps=None, *, clip_sample=None):
    super().__init__(grid, num_inference_steps, clip_sample=clip_sample)
    g = self.grid
    with np.errstate(divide="ignore", invalid="ignore"):
      lam = np.log(g.alphas.astype(np.float64)) - np.log(g.sigmas.astype(np.float64))
      h = lam[1:] - lam[:-1]
      h_prev = np.concatenate([[np.inf], h[:-1]])
      second = np.isfinite(h) & np.isfinite(h_prev) & (np.arange(len(h)) > 0)
      self._inv_2r = np.where(second, h / (2 * h_prev), 0.0).astype(np.float32)

  def _coefficients(self, a_t, s_t, a_s, s_s):
    # 1 - e^-h = 1 - (alpha_t sigma_s) / (sigma_t alpha_s): finite also where h is infinite.
    return {"x": s_s / s_t, "d": a_s * (1.0 - (a_t * s_s) / (s_t * a_s))}

  def run(self, denoise, x, rng):
    del rng
    inv_2r = jnp.asarray(self._inv_2r)

    def body(i, carry):
      x, x0_prev = carry
      x0, _ = denoise(x, i)
      x0 = self._clip(x0)
      d = x0 + inv_2r[i] * (x0 - x0_prev)
      return self._coef["x"][i] * x + self._coef["d"][i] * d, x0

    x, _ = jax.lax.fori_loop(0, self.grid.num_steps, body, (x, jnp.zeros_like(x)))
    return x


SAMPLERS = {cls.name: cls for cls in (DDPM, DDIM, Euler, Heun, DPMSolverMultistep)}


def create(name: str, grid: Grid, **kwargs) -> Sampler:
  """A sampler by name (ddpm, ddim, euler, heun, dpmpp_2m) over `grid`."""
  if name not in SAMPLERS:
    raise ValueError(f"unknown sampler '{name}'; valid: {', '.join(SAMPLERS)}")
  return SAMPLERS[name](grid, **kwargs)
