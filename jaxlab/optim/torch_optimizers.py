"""torch.optim optimizers: SGD, Adam, AdamW, Adamax, NAdam, RAdam, Adagrad, Adadelta, RMSprop.

Each reproduces its torch.optim class's `step()` (torch 2.13, single-tensor path, named in the
registry entry), with the class constructor's keyword names and defaults; `maximize`, `foreach`,
`capturable`, `differentiable` and `fused` are left out. `lr` may be a float or an optax schedule
(read at the optimizer's own step count, from 0).

Every optimizer here is `lr × (direction)` with the direction free of lr, so each is composed as
optax does (`transforms.with_weight_decay`): L2 weight decay (`grad += wd·p`, torch's default) →
direction → [decoupled decay (`p ← p·(1 - lr·wd)`, i.e. `+wd·p` before the lr scaling)] →
`scale_by_learning_rate`. Directions come from optax where optax's is the reference's, and are
written here where it is not.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.registry import register
from jaxlab.optim.transforms import one_minus_pow, with_weight_decay


# ---------------------------------------------------------------------------------------------
# SGD


class MomentumState(NamedTuple):
  count: jax.Array
  momentum: Any


def _torch_momentum(momentum: float, dampening: float) -> optax.GradientTransformation:
  """torch.optim.SGD's buffer: `buf = g` at the first step, then `buf = m·buf + (1-dampening)·g`."""

  def init(params):
    return MomentumState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

  def update(updates, state, params=None):
    del params
    first = state.count == 0
    buf = jax.tree.map(lambda g, b: jnp.where(first, g, momentum * b + (1 - dampening) * g),
                       updates, state.momentum)
    return buf, MomentumState(optax.safe_increment(state.count), buf)

  return optax.GradientTransformation(init, update)


def sgd(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
  """torch.optim.SGD: `g += wd·p; buf = m·buf + (1-dampening)·g (buf = g at step 1); p -= lr·buf`
  (or `lr·(g + m·buf)` with nesterov).

  With dampening = 0 this is optax's `add_decayed_weights` + `trace` (whose zero-initialised buffer
  gives `buf = g` at step 1 too). optax's trace has no dampening; with it, torch's first step
  (undampened) is written here.
  """
  if nesterov and (momentum <= 0 or dampening != 0):
    raise ValueError("sgd: nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")
  if momentum == 0:
    direction = optax.identity()
  elif dampening == 0:
    direction = optax.trace(decay=momentum, nesterov=nesterov)
  else:
    direction = _torch_momentum(momentum, dampening)  # nesterov needs dampening = 0
  return with_weight_decay(direction, lr, weight_decay, decoupled=False)


# ---------------------------------------------------------------------------------------------
# Adam, AdamW (amsgrad), Adamax


class AmsgradState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


def _scale_by_torch_amsgrad(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam with amsgrad as torch: the max is over the raw second moment, divided by the current
  `sqrt(1 - b2^t)`. (optax.amsgrad keeps the max of the bias-corrected moment: a different update.)
  """

  def init(params):
    zeros = optax.tree.zeros_like(params)
    return AmsgradState(jnp.zeros([], jnp.int32), zeros, zeros, zeros)

  def update(updates, state, params=None):
    del params
    t = optax.safe_increment(state.count)
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
    bc1, bc2 = one_minus_pow(b1, t), one_minus_pow(b2, t)
    out = jax.tree.map(lambda m, v: (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps), mu, nu_max)
    return out, AmsgradState(t, mu, nu, nu_max)

  return optax.GradientTransformation(init, update)


def _adam_direction(betas, eps, amsgrad):
  if amsgrad:
    return _scale_by_torch_amsgrad(betas[0], betas[1], eps)
  return optax.scale_by_adam(b1=betas[0], b2=betas[1], eps=eps)


def adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
         decoupled_weight_decay=False):
  """torch.optim.Adam: `m/(1-b1^t) / (sqrt(v)/sqrt(1-b2^t) + eps)`, weight decay as L2 in the
  gradient (or AdamW's with `decoupled_weight_decay`).

  Without amsgrad this is optax.scale_by_adam (same eps placement). optax's amsgrad differs (see
  `_scale_by_torch_amsgrad`).
  """
  return with_weight_decay(_adam_direction(betas, eps, amsgrad), lr, weight_decay,
                            decoupled_weight_decay)


def adamw(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
  """torch.optim.AdamW: Adam with `p ← p·(1 - lr·wd)` before the step.

  Without amsgrad this is optax.adamw (decay scaled by the same lr); optax's adamw has no amsgrad.
  Note optax.adamw's own default weight_decay is 1e-4, torch's 1e-2 (used here).
  """
  return with_weight_decay(_adam_direction(betas, eps, amsgrad), lr, weight_decay, decoupled=True)


def adamax(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
  """torch.optim.Adamax: `u = max(b2·u, |g| + eps); p -= lr/(1-b1^t) · m/u`, L2 weight decay.

  optax.scale_by_adamax is the same update (eps added to |g| inside the max).
  """
  return with_weight_decay(optax.scale_by_adamax(b1=betas[0], b2=betas[1], eps=eps), lr,
                            weight_decay, decoupled=False)


# ---------------------------------------------------------------------------------------------
# NAdam, RAdam


class NAdamState(NamedTuple):
  count: jax.Array
  mu_product: jax.Array  # ∏ mu_i, one scalar: torch keeps one per parameter, all equal
  mu: Any
  nu: Any


def _scale_by_torch_nadam(b1, b2, eps, momentum_decay) -> optax.GradientTransformation:
  """NAdam with torch's momentum schedule `mu_t = b1·(1 - 0.5·0.96^(t·momentum_decay))`."""

  def init(params):
    zeros = optax.tree.zeros_like(params)
    return NAdamState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32), zeros, zeros)

  def update(updates, state, params=None):
    del params
    t = optax.safe_increment(state.count)
    tf = t.astype(jnp.float32)
    mu_t = b1 * (1.0 - 0.5 * 0.96 ** (tf * momentum_decay))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((tf + 1) * momentum_decay))
    mu_product = state.mu_product * mu_t
    mu_product_next = mu_product * mu_next
    bc2 = one_minus_pow(b2, t)
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)

    def direction(g, m, v):
      denom = jnp.sqrt(v / bc2) + eps
      return ((1.0 - mu_t) / (1.0 - mu_product) * g / denom
              + mu_next / (1.0 - mu_product_next) * m / denom)

    out = jax.tree.map(direction, updates, mu, nu)
    return out, NAdamState(t, mu_product, mu, nu)

  return optax.GradientTransformation(init, update)


def nadam(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False):
  """torch.optim.NAdam (Dozat 2016, with the momentum-decay schedule).

  optax.nadam is Adam with a Nesterov look-ahead at constant b1 (no `momentum_decay` schedule, no
  product of mu's): a different trajectory, so this is written here.
  """
  return with_weight_decay(_scale_by_torch_nadam(betas[0], betas[1], eps, momentum_decay), lr,
                            weight_decay, decoupled_weight_decay)


def _scale_by_torch_radam(b1, b2, eps) -> optax.GradientTransformation:
  """RAdam: rectified adaptive step where `rho_t > 5`, plain bias-corrected momentum before."""
  rho_inf = 2.0 / (1.0 - b2) - 1.0

  def init(params):
    zeros = optax.tree.zeros_like(params)
    return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

  def update(updates, state, params=None):
    del params
    t = optax.safe_increment(state.count)
    tf = t.astype(jnp.float32)
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    bc1, bc2 = one_minus_pow(b1, t), one_minus_pow(b2, t)
    rho_t = rho_inf - 2.0 * tf * jnp.exp(tf * math.log(b2)) / bc2
    rectified = rho_t > 5.0
    # Clamped so the branch not taken stays finite (jit evaluates both).
    rect = jnp.sqrt(jnp.maximum((rho_t - 4) * (rho_t - 2) * rho_inf, 0.0)
                    / ((rho_inf - 4) * (rho_inf - 2) * jnp.maximum(rho_t, 1e-6)))
    out = jax.tree.map(
        lambda m, v: jnp.where(rectified, (m / bc1) * (jnp.sqrt(bc2) / (jnp.sqrt(v) + eps)) * rect,
                               m / bc1), mu, nu)
    return out, optax.ScaleByAdamState(t, mu, nu)

  return optax.GradientTransformation(init, update)


def radam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False):
  """torch.optim.RAdam (Liu et al. 2019): `p -= lr·m̂·r_t·sqrt(1-b2^t)/(sqrt(v)+eps)` if rho_t > 5
  else `p -= lr·m̂`.

  optax.radam puts eps after the bias correction (`m̂·r_t/(sqrt(v/(1-b2^t)) + eps)`): a different
  update for small second moments, so this is written here.
  """
  return with_weight_decay(_scale_by_torch_radam(betas[0], betas[1], eps), lr, weight_decay,
                            decoupled_weight_decay)


# ---------------------------------------------------------------------------------------------
# Adagrad, Adadelta, RMSprop


class AdagradState(NamedTuple):
  count: jax.Array
  sum_of_squares: Any


def _scale_by_torch_adagrad(lr_decay, initial_accumulator_value, eps):

  def init(params):
    return AdagradState(jnp.zeros([], jnp.int32),
                        optax.tree.full_like(params, initial_accumulator_value))

  def update(updates, state, params=None):
    del params
    sums = jax.tree.map(lambda s, g: s + g * g, state.sum_of_squares, updates)
    decay = 1.0 / (1.0 + state.count.astype(jnp.float32) * lr_decay)  # clr = lr·decay
    out = jax.tree.map(lambda g, s: decay * g / (jnp.sqrt(s) + eps), updates, sums)
    return out, AdagradState(optax.safe_increment(state.count), sums)

  return optax.GradientTransformation(init, update)


def adagrad(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
  """torch.optim.Adagrad: `s += g²; p -= lr/(1 + (t-1)·lr_decay) · g/(sqrt(s) + eps)`, L2 decay.

  optax.adagrad puts eps inside the square root (`g/sqrt(s + eps)`), zeroes entries with s = 0,
  defaults initial_accumulator_value to 0.1 and has no lr_decay, so this is written here.
  """
  return with_weight_decay(_scale_by_torch_adagrad(lr_decay, initial_accumulator_value, eps), lr,
                            weight_decay, decoupled=False)


def adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
  """torch.optim.Adadelta: `d = sqrt(Δ² + eps)/sqrt(E[g²] + eps)·g; p -= lr·d`, L2 decay.

  optax.scale_by_adadelta is the same update.
  """
  return with_weight_decay(optax.scale_by_adadelta(rho=rho, eps=eps), lr, weight_decay,
                            decoupled=False)


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
  """torch.optim.RMSprop: `g/(sqrt(E[g²] [- E[g]²]) + eps)`, optional momentum buffer, L2 decay.

  optax.rmsprop's defaults differ (decay 0.9, eps inside the sqrt) and its momentum buffer
  accumulates lr-scaled steps (different under a schedule); this chain uses optax's
  `scale_by_rms`/`scale_by_stddev` with `eps_in_sqrt=False`, then the momentum trace, then lr —
  torch's order.
  """
  scale = optax.scale_by_stddev if centered else optax.scale_by_rms
  direction = scale(decay=alpha, eps=eps, eps_in_sqrt=False)
  if momentum > 0:
    direction = optax.chain(direction, optax.trace(decay=momentum))
  return with_weight_decay(direction, lr, weight_decay, decoupled=False)


register("sgd", reference="torch.optim.SGD", lr=1e-3, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False)(sgd)
register("adam", reference="torch.optim.Adam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False)(adam)
register("adamw", reference="torch.optim.AdamW", lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=1e-2, amsgrad=False)(adamw)
register("adamax", reference="torch.optim.Adamax", lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0)(adamax)
register("nadam", reference="torch.optim.NAdam", lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False)(nadam)
register("radam", reference="torch.optim.RAdam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, decoupled_weight_decay=False)(radam)
register("adagrad", reference="torch.optim.Adagrad", lr=1e-2, lr_decay=0.0, weight_decay=0.0,
         initial_accumulator_value=0.0, eps=1e-10)(adagrad)
register("adadelta", reference="torch.optim.Adadelta", lr=1.0, rho=0.9, eps=1e-6,
         weight_decay=0.0)(adadelta)
register("rmsprop", reference="torch.optim.RMSprop", lr=1e-2, alpha=0.99, eps=1e-8,
         weight_decay=0.0, momentum=0.0, centered=False)(rmsprop)
