"""timm.optim optimizers: SGDP, AdamP, Lamb, Lars, Lion, AdaBelief.

Each is a transcription of its timm class's `step()` (timm 1.0.31, named in the registry entry),
with the class constructor's keyword names and defaults (not the presets of timm's
`create_optimizer_v2` names, which e.g. turn on `nesterov` for 'sgdp'/'adamp' and turn off
`rectify` for 'adabelief'). `lr` may be a float or an optax schedule, read at the transformation's
own step count. Where optax has the reference's direction (Lion's, AdaBelief's without
rectification or amsgrad) it is chained with decoupled decay and the lr as optax does; the others
couple lr, weight decay and the step, and compute the update `new_params - params` themselves.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.learning_rate import lr_at
from jaxlab.optim.registry import register
from jaxlab.optim.transforms import (AdamMoments, apply_caution, cast_like, cautious, need_float_lr,
                                     need_params, one_minus_pow, unzip, with_weight_decay)


def _norm(x):
  return jnp.sqrt(jnp.sum(jnp.square(x)))


# ---------------------------------------------------------------------------------------------
# SGDP / AdamP projection (clovaai/AdamP as timm copies it)


def _projection(p, grad, perturb, delta, wd_ratio, eps, caution):
  """timm.optim.adamp.projection: returns (perturb, weight-decay ratio).

  If the gradient is nearly orthogonal to every output channel of `p` (|cos| below
  delta/sqrt(fan)), or else to `p` as a whole, the radial part of `perturb` is removed and weight
  decay is scaled by `wd_ratio`. Both views are computed and picked with `where` (jit-able).
  """
  shape = p.shape

  def project(rows):
    pv, gv, xv = p.reshape(rows, -1), grad.reshape(rows, -1), perturb.reshape(rows, -1)
    # F.cosine_similarity: each vector divided by its norm clamped at eps.
    gn = jnp.maximum(jnp.linalg.norm(gv, axis=1, keepdims=True), eps)
    pn_ = jnp.maximum(jnp.linalg.norm(pv, axis=1, keepdims=True), eps)
    cosine = jnp.abs(jnp.sum((gv / gn) * (pv / pn_), axis=1))
    hit = jnp.max(cosine) < delta / math.sqrt(pv.shape[1])
    unit = pv / (jnp.linalg.norm(pv, axis=1, keepdims=True) + eps)
    radial = lambda x: unit * jnp.sum(unit * x, axis=1, keepdims=True)
    xv = xv - radial(xv)
    if caution:  # spherical caution: mask against the tangential gradient, project again
      xv = apply_caution(xv, gv - radial(gv))
      xv = xv - radial(xv)
    return hit, xv.reshape(shape)

  channel_hit, by_channel = project(shape[0])
  layer_hit, by_layer = project(1)
  plain = apply_caution(perturb, grad) if caution else perturb
  out = jnp.where(channel_hit, by_channel, jnp.where(layer_hit, by_layer, plain))
  ratio = jnp.where(channel_hit | layer_hit, wd_ratio, 1.0)
  return out, ratio


def _project_leaf(p, grad, perturb, delta, wd_ratio, eps, caution):
  if p.ndim > 1:
    return _projection(p, grad, perturb, delta, wd_ratio, eps, caution)
  return (apply_caution(perturb, grad) if caution else perturb), jnp.ones([], perturb.dtype)


class SGDPState(NamedTuple):
  count: jax.Array
  momentum: Any


def sgdp(lr=None, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, eps=1e-8,
         delta=0.1, wd_ratio=0.1, caution=False) -> optax.GradientTransformation:
  """timm.optim.SGDP (arXiv 2006.08217): SGD whose step on scale-invariant weights is projected.

  The momentum buffer starts at zero (`buf = m·buf + (1-dampening)·g` from the first step, unlike
  torch.optim.SGD). Weight decay is decoupled, `p ← p·(1 - lr·wd·ratio/(1-momentum))`, with
  ratio = `wd_ratio` where the projection applied. `lr` is required, as in timm. optax has no SGDP.
  """
  if lr is None:
    raise ValueError("sgdp needs lr (timm.optim.SGDP has no default lr)")

  def init(params):
    return SGDPState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

  def update(grads, state, params=None):
    need_params(params, "sgdp")
    lr_t = lr_at(lr, state.count)

    def leaf(g, p, buf):
      buf = momentum * buf + (1.0 - dampening) * g
      d_p = g + momentum * buf if nesterov else buf
      d_p, ratio = _project_leaf(p, g, d_p, delta, wd_ratio, eps, caution)
      u = -lr_t * d_p
      if weight_decay != 0:
        u = u - lr_t * weight_decay * ratio / (1 - momentum) * p
      return u, buf

    out = jax.tree.map(leaf, grads, params, state.momentum)
    u, buf = unzip(out, grads, 2)
    return cast_like(u, params), SGDPState(state.count + 1, buf)

  return optax.GradientTransformation(init, update)


def adamp(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
          nesterov=False, caution=False) -> optax.GradientTransformation:
  """timm.optim.AdamP (arXiv 2006.08217): Adam whose step on scale-invariant weights is projected.

  Weight decay is decoupled, `p ← p·(1 - lr·wd·ratio)`, ratio = `wd_ratio` where the projection
  applied; eps is added to the bias-corrected sqrt(v). optax has no AdamP.
  """
  beta1, beta2 = betas

  def update(grads, state, params=None):
    need_params(params, "adamp")
    t = (state.count + 1).astype(jnp.float32)
    lr_t = lr_at(lr, state.count)
    bc1, bc2 = one_minus_pow(beta1, t), one_minus_pow(beta2, t)

    def leaf(g, p, m, v):
      m = beta1 * m + (1 - beta1) * g
      v = beta2 * v + (1 - beta2) * g * g
      denom = jnp.sqrt(v) / jnp.sqrt(bc2) + eps
      perturb = (beta1 * m + (1 - beta1) * g) / denom if nesterov else m / denom
      perturb, ratio = _project_leaf(p, g, perturb, delta, wd_ratio, eps, caution)
      u = -(lr_t / bc1) * perturb
      if weight_decay > 0:
        u = u - lr_t * weight_decay * ratio * p
      return u, m, v

    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq)
    u, m, v = unzip(out, grads, 3)
    return cast_like(u, params), AdamMoments(state.count + 1, m, v)

  return optax.GradientTransformation(AdamMoments.zeros, update)


# ---------------------------------------------------------------------------------------------
# Lamb (NVIDIA FusedLAMB's variant, as timm.optim.Lamb)


def lamb(lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
         grad_averaging=True, max_grad_norm=1.0, trust_clip=False, always_adapt=False,
         caution=False, decoupled_decay=False,
         corrected_weight_decay=False) -> optax.GradientTransformation:
  """timm.optim.Lamb (arXiv 1904.00962, NVLAMB): Adam direction, layer-wise trust ratio.

  Gradients are first divided by max(global norm / max_grad_norm, 1) over every parameter given.
  The update is m̂/(sqrt(v̂)+eps) (+ wd·p, L2 after normalisation, unless `decoupled_decay`:
  `p ← p·(1 - lr·wd)` first), scaled by ‖p‖/‖update‖ (1 where either is 0; at most 1 with
  `trust_clip`) when wd ≠ 0 or `always_adapt`. `grad_averaging` uses (1-β1)·g in the first
  moment, else g. optax.lamb differs: no global clipping, no bias-correction/grad-averaging
  switches, and it adapts every parameter whatever its weight decay.
  """
  beta1, beta2 = betas
  beta3 = 1 - beta1 if grad_averaging else 1.0
  if corrected_weight_decay and decoupled_decay:
    need_float_lr(lr, "lamb")  # lr²/max_lr == lr for a float lr

  def update(grads, state, params=None):
    need_params(params, "lamb")
    t = (state.count + 1).astype(jnp.float32)
    lr_t = lr_at(lr, state.count)
    if bias_correction:
      bc1, bc2 = one_minus_pow(beta1, t), one_minus_pow(beta2, t)
    else:
      bc1 = bc2 = jnp.ones([], jnp.float32)
    if max_grad_norm is not None:
      clip = jnp.maximum(optax.tree.norm(grads) / max_grad_norm, 1.0)
      grads = jax.tree.map(lambda g: g / clip, grads)

    def leaf(g, p, m, v):
      m = beta1 * m + beta3 * g
      v = beta2 * v + (1 - beta2) * g * g
      upd = (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)
      if caution:
        upd = apply_caution(upd, g)
      decay = jnp.zeros_like(p)
      if weight_decay != 0:
        if decoupled_decay:
          decay = -lr_t * weight_decay * p
        else:
          upd = upd + weight_decay * p
      if weight_decay != 0 or always_adapt:
        w_norm, g_norm = _norm(p + decay), _norm(upd)  # timm decays p in place before its norm
        ratio = jnp.where((w_norm > 0) & (g_norm > 0), w_norm / g_norm, 1.0)
        if trust_clip:
          ratio = jnp.minimum(ratio, 1.0)
        upd = upd * ratio
      return decay - lr_t * upd, m, v

    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq)
    u, m, v = unzip(out, grads, 3)
    return cast_like(u, params), AdamMoments(state.count + 1, m, v)

  return optax.GradientTransformation(AdamMoments.zeros, update)


# ---------------------------------------------------------------------------------------------
# Lars (LARS / LARC as timm.optim.Lars)


class LarsState(NamedTuple):
  count: jax.Array
  momentum_buffer: Any


def lars(lr=1.0, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, trust_coeff=0.001,
         eps=1e-8, trust_clip=False, always_adapt=False) -> optax.GradientTransformation:
  """timm.optim.Lars (arXiv 1708.03888; LARC from NVIDIA apex): SGD on a trust-scaled gradient.

  When wd ≠ 0 or `always_adapt`: g ← (g + wd·p)·r, r = trust_coeff·‖p‖/(‖g‖ + wd·‖p‖ + eps)
  (1 where either norm is 0; with `trust_clip`, min(r/lr, 1)). Then torch SGD momentum: the buffer
  is the first step's gradient itself, `buf = m·buf + (1-dampening)·g` afterwards. optax.lars
  differs: r = trust·‖p‖/‖g + wd·p‖, no LARC clipping, dampening or first-step buffer.
  """
  if nesterov and (momentum <= 0 or dampening != 0):
    raise ValueError("lars: Nesterov momentum requires a momentum and zero dampening")

  def init(params):
    return LarsState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

  def update(grads, state, params=None):
    need_params(params, "lars")
    lr_t = lr_at(lr, state.count)

    def leaf(g, p, buf):
      if weight_decay != 0 or always_adapt:
        w_norm, g_norm = _norm(p), _norm(g)
        ratio = trust_coeff * w_norm / (g_norm + w_norm * weight_decay + eps)
        ratio = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
        if trust_clip:
          ratio = jnp.minimum(ratio / lr_t, 1.0)
        g = (g + weight_decay * p) * ratio
      if momentum != 0:
        buf = jnp.where(state.count == 0, g, momentum * buf + (1.0 - dampening) * g)
        g = g + momentum * buf if nesterov else buf
      return -lr_t * g, buf

    out = jax.tree.map(leaf, grads, params, state.momentum_buffer)
    u, buf = unzip(out, grads, 2)
    return cast_like(u, params), LarsState(state.count + 1, buf)

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Lion


def lion(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, caution=False,
         corrected_weight_decay=False, maximize=False) -> optax.GradientTransformation:
  """timm.optim.Lion (arXiv 2302.06675): p ← p·(1 - lr·wd) - lr·sign(lerp(m, g, 1-β1)).

  The direction is optax.scale_by_lion's (so without `caution` this is optax.lion), masked by
  `caution` against the gradient, which `maximize` negates first. `corrected_weight_decay`
  (lr²/max_lr) equals lr for a float lr.
  """
  if corrected_weight_decay:
    need_float_lr(lr, "lion")
  direction = optax.scale_by_lion(b1=betas[0], b2=betas[1])
  if caution:
    direction = cautious(direction)
  if maximize:
    direction = optax.chain(optax.scale(-1.0), direction)
  return with_weight_decay(direction, lr, weight_decay, decoupled=True)


# ---------------------------------------------------------------------------------------------
# AdaBelief


class AdaBeliefState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  exp_avg_var: Any  # includes the eps that timm adds to it in place every step
  max_exp_avg_var: Any


def _first_rectified_step(beta2):
  """The first step t with RAdam's ρ_t >= 5, in float64 as timm computes it (None: never)."""
  rho_inf = 2 / (1 - beta2) - 1

  def rho(t):
    b = beta2 ** t
    return rho_inf - 2 * t * b / (1 - b)

  if rho_inf < 5 or rho(2 ** 31 - 1) < 5:
    return None
  lo, hi = 1, 2 ** 31 - 1  # ρ_t increases with t: bisect for the first t with ρ_t >= 5
  while lo < hi:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if rho(mid) >= 5 else (mid + 1, hi)
  return lo


def _rho(beta2, t):
  """RAdam's ρ_t = ρ∞ - 2t·β2^t/(1-β2^t), in float32 without cancellation.

  With L = -log β2 and y = t·L: 2tβ^t/(1-β^t) = (2/L)·(1 - h(y)), h(y) = 1 - y/expm1(y), so
  ρ_t = (ρ∞ - 2/L) + (2/L)·h(y); the constant is taken in float64, h by its series for small y.
  """
  big_l = -math.log(beta2)
  const = (2 / (1 - beta2) - 1) - 2 / big_l
  y = t * big_l
  series = y / 2 - y ** 2 / 12 + y ** 4 / 720 - y ** 6 / 30240 + y ** 8 / 1209600 - y ** 10 / 47900160
  direct = 1 - y / jnp.expm1(jnp.maximum(y, 0.5))
  h = jnp.where(y < 0.5, series, direct)  # series error < 1e-12 below 0.5
  return const + (2 / big_l) * h


def adabelief(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, amsgrad=False,
              decoupled_decay=True, fixed_decay=False, rectify=True,
              degenerated_to_sgd=True) -> optax.GradientTransformation:
  """timm.optim.AdaBelief (arXiv 2010.07468): Adam on the variance of g around its EMA.

  s ← β2·s + (1-β2)·(g-m)² + eps (eps accumulates in the state, as timm adds it in place);
  denominator sqrt(ŝ) + eps (amsgrad: the running max of s). With `rectify` (the class default;
  timm's factory name 'adabelief' turns it off, 'radabelief' on) the RAdam rule: for ρ_t >= 5 the
  step is lr·r_t·m/(sqrt(s) + eps) (s not bias-corrected, never the amsgrad max), before that
  lr·m/(1-β1^t) if `degenerated_to_sgd`, else none. Weight decay: decoupled `p·(1 - lr·wd)`
  (`fixed_decay`: `p·(1 - wd)`), or L2 in the gradient. Without rectify, amsgrad or L2/fixed decay
  this is optax's scale_by_belief (eps_root = eps) with decoupled weight decay; optax.adabelief
  has no rectification, amsgrad or weight decay.
  """
  beta1, beta2 = betas
  if not (rectify or amsgrad or fixed_decay) and decoupled_decay:
    return with_weight_decay(optax.scale_by_belief(b1=beta1, b2=beta2, eps=eps, eps_root=eps), lr,
                             weight_decay, decoupled=True)
  first_rectified = _first_rectified_step(beta2) if rectify else None

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return AdaBeliefState(jnp.zeros([], jnp.int32), zeros(), zeros(),
                          zeros() if amsgrad else ())

  def update(grads, state, params=None):
    need_params(params, "adabelief")
    step = state.count + 1
    t = step.astype(jnp.float32)
    lr_t = lr_at(lr, state.count)
    bc1, bc2 = one_minus_pow(beta1, t), one_minus_pow(beta2, t)
    if rectify:
      rho_inf = 2 / (1 - beta2) - 1
      rho = jnp.maximum(_rho(beta2, t), 4.0)  # only read where ρ_t >= 5
      r_t = jnp.sqrt(bc2 * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2)) / bc1
      adaptive = jnp.asarray(False) if first_rectified is None else step >= first_rectified
      sgd_size = 1.0 / bc1 if degenerated_to_sgd else jnp.zeros([], jnp.float32)

    def leaf(g, p, m, s, smax):
      decay = jnp.zeros_like(p)
      if decoupled_decay:
        decay = -(weight_decay if fixed_decay else lr_t * weight_decay) * p
      elif weight_decay != 0:
        g = g + weight_decay * p
      m = m + (1 - beta1) * (g - m)
      s = beta2 * s + (1 - beta2) * jnp.square(g - m) + eps
      if amsgrad:
        smax = jnp.maximum(smax, s)
      if rectify:
        step_dir = jnp.where(adaptive, r_t * m / (jnp.sqrt(s) + eps), sgd_size * m)
      else:
        step_dir = (m / bc1) / (jnp.sqrt(smax if amsgrad else s) / jnp.sqrt(bc2) + eps)
      # timm decays p in place first, then adds the step: p' = p·(1-c) - lr·step
      return decay - lr_t * step_dir, m, s, smax

    smaxes = state.max_exp_avg_var if amsgrad else state.exp_avg_var
    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_var, smaxes)
    u, m, s, smax = unzip(out, grads, 4)
    return (cast_like(u, params),
            AdaBeliefState(step, m, s, smax if amsgrad else ()))

  return optax.GradientTransformation(init, update)


register("sgdp", reference="timm.optim.SGDP", lr=None, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1, caution=False)(sgdp)
register("adamp", reference="timm.optim.AdamP", lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
         weight_decay=0.0, delta=0.1, wd_ratio=0.1, nesterov=False, caution=False)(adamp)
# Lamb's clip spans every parameter group (timm clips over all of them before the step).
register("lamb", reference="timm.optim.Lamb", global_clip="max_grad_norm", lr=1e-3,
         bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, grad_averaging=True,
         max_grad_norm=1.0, trust_clip=False, always_adapt=False, caution=False,
         decoupled_decay=False, corrected_weight_decay=False)(lamb)
register("lars", reference="timm.optim.Lars", lr=1.0, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False, trust_coeff=0.001, eps=1e-8, trust_clip=False,
         always_adapt=False)(lars)
register("lion", reference="timm.optim.Lion", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
         caution=False, corrected_weight_decay=False, maximize=False)(lion)
register("adabelief", reference="timm.optim.AdaBelief", lr=1e-3, betas=(0.9, 0.999), eps=1e-16,
         weight_decay=0.0, amsgrad=False, decoupled_decay=True, fixed_decay=False, rectify=True,
         degenerated_to_sgd=True)(adabelief)
