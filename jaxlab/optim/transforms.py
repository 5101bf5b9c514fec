"""Pieces the optimizer transcriptions share (torch, timm, research, recent, Muon), each once:
the optax-style composition `with_weight_decay`, and helpers for the transformations that couple
lr, weight decay and the step as their reference does and so compute the update themselves."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def with_weight_decay(direction, lr, weight_decay, decoupled) -> optax.GradientTransformation:
  """`-lr·direction(g + wd·p)` (L2 in the gradient, torch's default) or, `decoupled`,
  `-lr·(direction(g) + wd·p)`, i.e. `p ← p·(1 - lr·wd) - lr·direction` (AdamW's)."""
  decay = optax.add_decayed_weights(weight_decay)
  parts = (direction, decay) if decoupled else (decay, direction)
  return optax.chain(*parts, optax.scale_by_learning_rate(lr))


class AdamMoments(NamedTuple):
  """The step count and Adam's moments, under the PyTorch references' names."""
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: Any

  @classmethod
  def zeros(cls, params):  # a transformation's init
    zeros = optax.tree.zeros_like(params)
    return cls(jnp.zeros([], jnp.int32), zeros, zeros)


def need_params(params, name: str) -> None:
  """Fails in one line when `update()` is called without the parameters the step reads."""
  if params is None:
    raise ValueError(f"{name} needs `params` in update(): its step reads the parameters")


def need_float_lr(lr, name: str) -> None:
  """timm's `corrected_weight_decay` decays by lr²/max_lr, max_lr the lr timm snapshots at
  construction: only a float lr is that (and there it equals lr)."""
  if callable(lr):
    raise ValueError(f"{name}: corrected_weight_decay needs a float lr "
                     "(timm snapshots the peak lr)")


def cast_like(updates, params):
  """`updates` in each parameter's dtype (float32 lr and bias corrections promote bf16 leaves).

  Transformations that compute their update themselves write it as `new_p - p` worked out by
  hand (`-lr·step - lr·wd·p`), never by subtracting, so a step far below |p| keeps its precision.
  """
  return jax.tree.map(lambda u, p: u.astype(p.dtype), updates, params)


def one_minus_pow(beta: float, t: jax.Array) -> jax.Array:
  """`1 - beta**t` (a bias correction) for a Python float beta, as `-expm1(t·log beta)`.

  PyTorch computes it in float64. In float32, `1 - beta**t` loses the rounding of beta near 1
  relative to the result: 1.3e-5 for beta = 0.999, 1.7e-4 for 0.9999; this is within 1e-7.
  """
  if beta == 0:
    return jnp.ones_like(t, jnp.float32)
  return -jnp.expm1(t * math.log(beta))


def apply_caution(update, grad):
  """'Cautious Optimizers' (Liang et al., arXiv 2411.16085) as timm writes it: the entries of
  `update` that agree in sign with `grad`, divided by the kept fraction (at least 1e-3)."""
  mask = (update * grad > 0).astype(grad.dtype)
  return update * (mask / jnp.maximum(jnp.mean(mask), 1e-3))


def cautious(direction: optax.GradientTransformation) -> optax.GradientTransformation:
  """`direction` with `apply_caution` against the gradient it was given."""

  def update(grads, state, params=None):
    updates, state = direction.update(grads, state, params)
    return jax.tree.map(apply_caution, updates, grads), state

  return optax.GradientTransformation(direction.init, update)


def unzip(out, like, n: int) -> tuple:
  """The n trees of `jax.tree.map(f, like, ...)` where f returns an n-tuple per leaf."""
  return tuple(jax.tree.map(lambda _, o: o[i], like, out) for i in range(n))


def flat_state(parts):
  """`parts` raveled and concatenated into one vector, or a scalar 0 if they hold no entries.

  For state that is not parameter-shaped (kept flat so the sharding code replicates it). Never
  zero-size, which Orbax cannot save (a parameter group with nothing of that kind), and always
  one leaf: `optax.tree_map_params` reads the state's structure from `init` on a placeholder.
  """
  parts = [jnp.ravel(x) for x in parts if x.size]
  return jnp.concatenate(parts) if parts else jnp.zeros([], jnp.float32)


def peak_lr(lr, current: jax.Array, horizon: int = 2 ** 30) -> jax.Array:
  """The lr a PyTorch reference was constructed with, where it reads that (AdaBound's `base_lr`).

  A float lr is its own peak. For a schedule, the lr a torch scheduler multiplies is its peak,
  taken as the value where it first stops rising: `lr(c)` at the first count c < horizon with
  `lr(c + 1) <= lr(c)`, found by bisection. That is the top of a warmup (jaxlab's schedules,
  optax's warmup_*), or `lr(0)` of a constant or decaying schedule. It is never taken below the
  `current` lr, so a schedule that is flat before it rises, or rises again, is still finite.
  """
  if not callable(lr):
    return jnp.asarray(lr, jnp.float32)

  def bisect(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    falls = lr(mid + 1) <= lr(mid)
    return jnp.where(falls, lo, mid + 1), jnp.where(falls, mid, hi)

  lo, _ = jax.lax.fori_loop(0, horizon.bit_length(), bisect,
                            (jnp.zeros([], jnp.int32), jnp.full([], horizon, jnp.int32)))
  return jnp.maximum(jnp.asarray(lr(lo), jnp.float32), current)
