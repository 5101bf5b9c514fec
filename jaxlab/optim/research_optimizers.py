"""Research optimizers outside torch.optim: Adan, NovoGrad, Adafactor, AdaBound, SophiaG, ADOPT.

Each is a transcription of its PyTorch reference's `step()` (named in the registry entry), written
as an optax GradientTransformation. `lr` may be a float or an optax schedule, read at the
transformation's own step count. AdaBound is lr times an lr-free direction, chained with L2 decay
and the lr as optax composes; the others couple lr, weight decay and the step (proximal decay,
decay skipped on the first step, the lr inside the step) and compute `new_params - params`.

State that is one number per parameter (NovoGrad's layer-wise second moment) or has another shape
than its parameter (Adafactor's factored row/column statistics) is kept as one flat vector per
kind (`transforms.flat_state`), so `optax.tree_map_params` (the sharding code) replicates it
instead of sharding it with a parameter's spec of another rank.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.learning_rate import lr_at
from jaxlab.optim.registry import StepNeeds, register
from jaxlab.optim.transforms import (AdamMoments, apply_caution, cast_like, flat_state,
                                     need_float_lr, need_params, one_minus_pow, peak_lr, unzip,
                                     with_weight_decay)


# ---------------------------------------------------------------------------------------------
# Adan


class AdanState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  exp_avg_diff: Any
  prev_grad: Any  # the previous step's gradient (timm keeps its negative)


def adan(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
         caution=False) -> optax.GradientTransformation:
  """timm.optim.Adan (arXiv 2208.06677): Nesterov momentum estimated from gradient differences.

  Weight decay is proximal, `p ← (p - step) / (1 + lr·wd)`, or with `no_prox` decoupled,
  `p ← p·(1 - lr·wd) - step`. The gradient difference is zero at the first step. optax has no
  Adan.
  """
  beta1, beta2, beta3 = betas

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return AdanState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros(), zeros())

  def update(grads, state, params=None):
    need_params(params, "adan")
    step = state.count + 1
    t = step.astype(jnp.float32)
    lr_t = lr_at(lr, state.count)
    bias_correction1 = one_minus_pow(beta1, t)
    bias_correction2 = one_minus_pow(beta2, t)
    bias_correction3_sqrt = jnp.sqrt(one_minus_pow(beta3, t))

    def leaf(g, p, m, n, d, prev):
      diff = jnp.where(step == 1, jnp.zeros_like(g), g - prev)
      m = m + (1 - beta1) * (g - m)
      d = beta2 * d + (1 - beta2) * diff
      nesterov_grad = g + beta2 * diff
      n = beta3 * n + (1 - beta3) * nesterov_grad * nesterov_grad
      denom = jnp.sqrt(n) / bias_correction3_sqrt + eps
      m_used = apply_caution(m, g) if caution else m
      step_dir = (lr_t / bias_correction1) * m_used / denom + (lr_t * beta2 / bias_correction2) * d / denom
      if no_prox:  # p·(1 - lr·wd) - step
        u = -lr_t * weight_decay * p - step_dir
      else:  # (p - step) / (1 + lr·wd)
        u = -(step_dir + lr_t * weight_decay * p) / (1 + lr_t * weight_decay)
      return u, m, n, d

    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq, state.exp_avg_diff,
                       state.prev_grad)
    u, m, n, d = unzip(out, grads, 4)
    return cast_like(u, params), AdanState(step, m, n, d, grads)

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# NovoGrad (NVIDIA's, as timm.optim.NvNovoGrad)


class NovoGradState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: jax.Array  # (number of parameter leaves,): one squared gradient norm per tensor
  max_exp_avg_sq: jax.Array  # same, running max (amsgrad)


def novograd(lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0.0, grad_averaging=False,
             amsgrad=False, decoupled_decay=False,
             corrected_weight_decay=False) -> optax.GradientTransformation:
  """timm.optim.NvNovoGrad (arXiv 1905.11286): layer-wise second moment = EMA of ‖grad‖².

  The second moment starts at the first step's squared norm (not bias-corrected); the gradient is
  divided by `sqrt(v) + eps` before L2 weight decay (`+ wd·p`) and momentum, unless
  `decoupled_decay` (`p ← p·(1 - lr·wd)`). `corrected_weight_decay` (lr²/max_lr) needs the peak lr,
  which timm snapshots from the constructor: here only a float `lr`, where it equals `lr`.
  optax.novograd differs: it bias-corrects neither, adds weight decay after its own normalisation
  in another order and has no amsgrad.
  """
  beta1, beta2 = betas
  if corrected_weight_decay:
    need_float_lr(lr, "novograd")

  def init(params):
    n = len(jax.tree.leaves(params))
    zeros = flat_state([jnp.zeros([n], jnp.float32)])
    return NovoGradState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params), zeros, zeros)

  def update(grads, state, params=None):
    need_params(params, "novograd")
    lr_t = lr_at(lr, state.count)
    g_leaves, treedef = jax.tree.flatten(grads)
    p_leaves = treedef.flatten_up_to(params)
    m_leaves = treedef.flatten_up_to(state.exp_avg)
    new_u, new_m, new_v, new_vmax = [], [], [], []
    for i, (g, p, m) in enumerate(zip(g_leaves, p_leaves, m_leaves)):
      norm = jnp.sum(jnp.square(g.astype(jnp.float32)))
      v_prev = state.exp_avg_sq[i]
      v = jnp.where(v_prev == 0, norm, beta2 * v_prev + (1 - beta2) * norm)
      vmax = jnp.maximum(state.max_exp_avg_sq[i], v)
      denom = jnp.sqrt(vmax if amsgrad else v) + eps
      u = g / denom
      decay = jnp.zeros_like(p)
      if weight_decay != 0:
        if decoupled_decay:
          decay = -lr_t * weight_decay * p  # lr²/max_lr == lr for a float lr
        else:
          u = u + weight_decay * p
      if grad_averaging:
        u = u * (1 - beta1)
      m = beta1 * m + u
      new_u.append(decay - lr_t * m)
      new_m.append(m)
      new_v.append(v)
      new_vmax.append(vmax)
    return (cast_like(treedef.unflatten(new_u), params),
            NovoGradState(state.count + 1, treedef.unflatten(new_m), flat_state(new_v),
                          flat_state(new_vmax)))

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Adafactor (timm.optim.Adafactor, from fairseq)


class AdafactorState(NamedTuple):
  count: jax.Array
  exp_avg: Any  # parameter-shaped first moment, or () without betas
  exp_avg_sq_row: jax.Array  # factored leaves' row statistics, flattened and concatenated
  exp_avg_sq_col: jax.Array  # their column statistics, likewise
  exp_avg_sq: jax.Array  # unfactored leaves' second moments, likewise


def _factored_dims(shape, min_size):
  # timm's heuristic: leading (out, in) dims of >2-D (conv) weights, else the trailing two.
  ndim = len(shape)
  if ndim > 2 and shape[0] > min_size and shape[1] > min_size:
    return 0, 1
  if ndim >= 2 and shape[-2] > min_size and shape[-1] > min_size:
    return ndim - 2, ndim - 1
  return None


def _drop(shape, dim):
  return tuple(shape[:dim]) + tuple(shape[dim + 1:])


def _adafactor_layout(shapes, min_size):
  """Per leaf: (factored dims, [(offset, shape)] slices of the flat row, col and full vectors)."""
  layout, sizes = [], {"row": 0, "col": 0, "full": 0}

  def take(kind, shape):
    start = sizes[kind]
    sizes[kind] += math.prod(shape)
    return start, tuple(shape)

  for shape in shapes:
    dims = _factored_dims(shape, min_size)
    if dims is None:
      layout.append((None, take("full", shape), None))
    else:
      dim_col, dim_row = dims
      layout.append((dims, take("row", _drop(shape, dim_row)), take("col", _drop(shape, dim_col))))
  return layout, sizes


def _slice(flat, where):
  start, shape = where
  return flat[start:start + math.prod(shape)].reshape(shape)


def _rms(x):
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def adafactor(lr=None, eps=1e-30, eps_scale=1e-3, clip_threshold=1.0, decay_rate=-0.8, betas=None,
              weight_decay=0.0, scale_parameter=True, warmup_init=False, min_dim_size_to_factor=16,
              caution=False) -> optax.GradientTransformation:
  """timm.optim.Adafactor (arXiv 1804.04235).

  `lr=None` is the relative step `min(1e-2 or 1e-6·t with warmup_init, 1/sqrt(t))`, times
  `max(eps_scale, RMS(p))` with `scale_parameter`; a given lr is used as is (timm, unlike fairseq /
  HF, does not scale an external lr by RMS(p)). `beta2_t = 1 - t^decay_rate`; second moments of
  `g² + eps`, factored over timm's dims for leaves with two dims > `min_dim_size_to_factor`; the
  update's RMS is clipped to `clip_threshold`; optional first moment `betas[0]` on the scaled
  update; weight decay `p ← p - wd·lr_t·p`. optax.adafactor differs: it factors the two largest
  trailing dims by another size rule, decays by `decay_rate` differently, clips before its
  momentum, and multiplies weight decay by its own lr.
  """
  relative_step = lr is None
  if warmup_init and not relative_step:
    raise ValueError("adafactor: warmup_init requires relative_step (lr=None)")
  beta1 = None if betas is None else betas[0]

  def init(params):
    leaves = jax.tree.leaves(params)
    _, sizes = _adafactor_layout([x.shape for x in leaves], min_dim_size_to_factor)
    flat = lambda kind: flat_state([jnp.zeros([sizes[kind]], jnp.float32)])
    exp_avg = optax.tree.zeros_like(params) if beta1 is not None else ()
    return AdafactorState(jnp.zeros([], jnp.int32), exp_avg, flat("row"), flat("col"), flat("full"))

  def update(grads, state, params=None):
    need_params(params, "adafactor")
    step = state.count + 1
    t = step.astype(jnp.float32)
    beta2t = 1.0 - t ** decay_rate
    g_leaves, treedef = jax.tree.flatten(grads)
    p_leaves = treedef.flatten_up_to(params)
    m_leaves = treedef.flatten_up_to(state.exp_avg) if beta1 is not None else [None] * len(g_leaves)
    layout, _ = _adafactor_layout([g.shape for g in g_leaves], min_dim_size_to_factor)
    rows, cols, fulls = [], [], []
    new_u, new_m = [], []
    for g, p, m, (dims, a, b) in zip(g_leaves, p_leaves, m_leaves, layout):
      if relative_step:
        min_step = 1e-6 * t if warmup_init else 1e-2
        lr_t = jnp.minimum(min_step, 1.0 / jnp.sqrt(t))
        if scale_parameter:
          lr_t = lr_t * jnp.maximum(eps_scale, _rms(p))
      else:
        lr_t = lr_at(lr, state.count)
      sq = jnp.square(g) + eps
      if dims is None:
        v = _slice(state.exp_avg_sq, a)
        v = v + (1.0 - beta2t) * (sq - v)
        fulls.append(v.ravel())
        u = jax.lax.rsqrt(v) * g
      else:
        dim_col, dim_row = dims
        row, col = _slice(state.exp_avg_sq_row, a), _slice(state.exp_avg_sq_col, b)
        row = row + (1.0 - beta2t) * (jnp.mean(sq, axis=dim_row) - row)
        col = col + (1.0 - beta2t) * (jnp.mean(sq, axis=dim_col) - col)
        rows.append(row.ravel())
        cols.append(col.ravel())
        r_factor = jnp.expand_dims(
            jax.lax.rsqrt(row / jnp.mean(row, axis=dim_col, keepdims=True)), dim_row)
        c_factor = jax.lax.rsqrt(jnp.expand_dims(col, dim_col))
        u = r_factor * c_factor * g
      u = u / jnp.maximum(_rms(u) / clip_threshold, 1.0)
      u = u * lr_t
      if beta1 is not None:
        m = m + (1 - beta1) * (u - m)
        new_m.append(m)
        u = apply_caution(m, g) if caution else m
      if weight_decay != 0:
        u = u + weight_decay * lr_t * p
      new_u.append(-u)
    exp_avg = treedef.unflatten(new_m) if beta1 is not None else ()
    return (cast_like(treedef.unflatten(new_u), params),
            AdafactorState(step, exp_avg, flat_state(rows), flat_state(cols),
                           flat_state(fulls)))

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# AdaBound (the authors' `adabound` package)


class AdaBoundState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  max_exp_avg_sq: Any  # () unless amsbound


def _scale_by_adabound(lr, betas, final_lr, gamma, eps, amsbound):
  """AdaBound's step over lr_t: `clip(sqrt(1-β2^t)/(1-β1^t)/(sqrt(v)+eps), bounds/lr_t)·m`."""
  beta1, beta2 = betas

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return AdaBoundState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros() if amsbound else ())

  def update(grads, state, params=None):
    del params
    t = optax.safe_increment(state.count)
    tf = t.astype(jnp.float32)
    base_lr = peak_lr(lr, lr_at(lr, state.count))
    final = final_lr / jnp.where(base_lr > 0, base_lr, 1.0)  # base_lr = 0: lr_t = 0, no step
    lower, upper = final * (1 - 1 / (gamma * tf + 1)), final * (1 + 1 / (gamma * tf))
    step_size = jnp.sqrt(one_minus_pow(beta2, t)) / one_minus_pow(beta1, t)
    m = optax.tree.update_moment(grads, state.exp_avg, beta1, 1)
    v = optax.tree.update_moment_per_elem_norm(grads, state.exp_avg_sq, beta2, 2)
    vmax = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, v) if amsbound else ()
    out = jax.tree.map(lambda m, v: jnp.clip(step_size / (jnp.sqrt(v) + eps), lower, upper) * m,
                       m, vmax if amsbound else v)
    return out, AdaBoundState(t, m, v, vmax)

  return optax.GradientTransformation(init, update)


def adabound(lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0.0,
             amsbound=False) -> optax.GradientTransformation:
  """adabound.AdaBound (Luo et al., ICLR 2019): Adam whose per-entry step is clipped to bounds
  that converge to `final_lr`.

  As the authors: L2 weight decay in the gradient; eps added to `sqrt(v)` without bias
  correction, the correction folded into the step size; bounds
  `final_lr·lr_t/base_lr·(1 ∓ 1/(gamma·t [+1]))`, `base_lr` the lr the optimizer was constructed
  with (a torch scheduler then scales both the step and the bounds). The step is thus lr_t times
  an lr-free direction, chained as optax does. For a float lr `base_lr` is lr; for a schedule it
  is the schedule's peak (`transforms.peak_lr`: where it first stops rising, so a warmup from 0
  gives the reference with its lr at the peak), never below lr_t. optax has no AdaBound.
  """
  return with_weight_decay(_scale_by_adabound(lr, betas, final_lr, gamma, eps, amsbound), lr,
                           weight_decay, decoupled=False)


# ---------------------------------------------------------------------------------------------
# SophiaG (Liuhong99/Sophia)


class SophiaState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  hessian: Any  # EMA of the Gauss-Newton-Bartlett diagonal estimate


def sophia(lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=1e-1, maximize=False,
           bs=5120) -> optax.GradientTransformationExtraArgs:
  """SophiaG from the authors' release (Liuhong99/Sophia `sophia.py`, arXiv 2305.14342).

  Step: `p ← p·(1 - lr·wd)`; `m ← β1·m + (1-β1)·g`; `p ← p - lr·sign(m)·min(|m|/(rho·bs·h + 1e-15), 1)`.
  `bs` is the reference `step(bs=5120)` argument (tokens per batch), not a constructor one.

  The Hessian EMA `h ← β2·h + (1-β2)·ĝ²` is the reference's `update_hessian()`, where ĝ is the
  gradient of the loss on labels *sampled from the model's own predictions* (the GNB estimator).
  Here it is an extra argument of `update`:

      updates, opt_state = tx.update(grads, opt_state, params,
                                     hessian_grads=ĝ, hessian_update=flag)

  The EMA is applied (where `flag` is true) *before* this step's update, which equals the
  reference calling `update_hessian()` right after the previous step: the reference train loop does
  that after iterations t with `t % k == k-1`, so a jaxlab train step at iteration t (0-based,
  params before this step) passes ĝ from the sampled-label loss and `flag = (t % k == 0) & (t > 0)`
  (compute ĝ under `jax.lax.cond` to skip the extra backward pass on other steps). Without
  `hessian_grads` the Hessian EMA is left as is. Inside `optax.chain` the extra arguments reach
  this transformation by name. optax has no Sophia.
  """
  beta1, beta2 = betas

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return SophiaState(jnp.zeros([], jnp.int32), zeros(), zeros())

  def update(grads, state, params=None, *, hessian_grads=None, hessian_update=True, **_):
    need_params(params, "sophia")
    lr_t = lr_at(lr, state.count)
    hessian = state.hessian
    if hessian_grads is not None:
      flag = jnp.asarray(hessian_update)
      hessian = jax.tree.map(
          lambda h, hg: jnp.where(flag, beta2 * h + (1 - beta2) * hg * hg, h),
          hessian, hessian_grads)

    def leaf(g, p, m, h):
      g = -g if maximize else g
      m = beta1 * m + (1 - beta1) * g
      ratio = jnp.minimum(jnp.abs(m) / (rho * bs * h + 1e-15), 1.0)
      return -lr_t * weight_decay * p - lr_t * jnp.sign(m) * ratio, m

    out = jax.tree.map(leaf, grads, params, state.exp_avg, hessian)
    u, m = unzip(out, grads, 2)
    return cast_like(u, params), SophiaState(state.count + 1, m, hessian)

  return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------------
# ADOPT (timm.optim.Adopt)


def adopt(lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_exp=0.333, weight_decay=0.0,
          decoupled=False, corrected_weight_decay=False, caution=False,
          maximize=False) -> optax.GradientTransformation:
  """timm.optim.Adopt (arXiv 2411.02853): normalise by the *previous* second moment, then momentum.

  Step 1 only sets `v = g²` (parameters unchanged); later steps: `g/max(sqrt(v), eps)` clipped to
  `±(t-1)^clip_exp`, lerped into `m`, `p ← p - lr·m`, then `v` updated. Weight decay is L2 in the
  gradient, or with `decoupled` `p ← p·(1 - lr·wd)` (lr²/max_lr with corrected_weight_decay: a
  float lr only, where it equals lr). optax.contrib's ADOPT differs: it decays weights like AdamW
  through optax.chain and clips with another rule.
  """
  beta1, beta2 = betas
  if corrected_weight_decay:
    need_float_lr(lr, "adopt")

  def update(grads, state, params=None):
    need_params(params, "adopt")
    step = state.count + 1
    first = step == 1
    lr_t = lr_at(lr, state.count)

    def leaf(g, p, m, v):
      g = -g if maximize else g
      if weight_decay != 0 and not decoupled:
        g = g + weight_decay * p
      decay = -lr_t * weight_decay * p if weight_decay != 0 and decoupled else jnp.zeros_like(p)
      normed = g / jnp.maximum(jnp.sqrt(v), eps)
      if clip_exp is not None:
        clip = (step - 1).astype(jnp.float32) ** clip_exp
        normed = jnp.clip(normed, -clip, clip)
      m_new = m + (1 - beta1) * (normed - m)
      m_used = apply_caution(m_new, g) if caution else m_new
      u = decay - lr_t * m_used
      v_new = beta2 * v + (1 - beta2) * g * g
      return (jnp.where(first, jnp.zeros_like(u), u), jnp.where(first, m, m_new),
              jnp.where(first, v + g * g, v_new))

    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq)
    u, m, v = unzip(out, grads, 3)
    return cast_like(u, params), AdamMoments(step, m, v)

  return optax.GradientTransformation(AdamMoments.zeros, update)


# ---------------------------------------------------------------------------------------------
# Registry entries: keyword names and defaults are the reference constructors'.

register("adan", reference="timm.optim.Adan", lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8,
         weight_decay=0.0, no_prox=False, caution=False)(adan)
register("novograd", reference="timm.optim.NvNovoGrad", lr=1e-3, betas=(0.95, 0.98), eps=1e-8,
         weight_decay=0.0, grad_averaging=False, amsgrad=False, decoupled_decay=False,
         corrected_weight_decay=False)(novograd)
register("adafactor", reference="timm.optim.Adafactor", lr=None, eps=1e-30, eps_scale=1e-3,
         clip_threshold=1.0, decay_rate=-0.8, betas=None, weight_decay=0.0, scale_parameter=True,
         warmup_init=False, min_dim_size_to_factor=16, caution=False)(adafactor)
register("adabound", reference="adabound.AdaBound", lr=1e-3, betas=(0.9, 0.999), final_lr=0.1,
         gamma=1e-3, eps=1e-8, weight_decay=0.0, amsbound=False)(adabound)


def _sophia_needs(hparams: dict) -> StepNeeds:
  """SophiaG's Hessian estimate from the train step, every `hessian_every` steps (the release's
  `hess_interval`): the gradient of the task's sampled-label loss. The reference loop calls
  `update_hessian()` after the step whose index is k-1 (mod k), on the next batch with the
  updated weights: here, at the start of every step t = k, 2k, ... on its own batch, before the
  update. In between no extra pass runs (`lax.cond`)."""
  every = hparams["hessian_every"]
  if not isinstance(every, int) or every <= 0:
    raise ValueError(f"sophia: hessian_every must be a positive integer, got {every!r}")

  def update_args(step, sampled_grads):
    refresh = (step % every == 0) & (step > 0)
    zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(sampled_grads))
    return {"hessian_grads": jax.lax.cond(refresh, sampled_grads, zeros), "hessian_update": refresh}

  return StepNeeds(update_args=update_args, task_abilities=("sampled_loss",))


register("sophia", reference="Liuhong99/Sophia sophia.SophiaG", step_needs=_sophia_needs,
         step_hparams=("hessian_every",), lr=1e-4, betas=(0.965, 0.99), rho=0.04,
         weight_decay=1e-1, maximize=False, bs=5120, hessian_every=10)(sophia)
register("adopt", reference="timm.optim.Adopt", lr=1e-3, betas=(0.9, 0.9999), eps=1e-6,
         clip_exp=0.333, weight_decay=0.0, decoupled=False, corrected_weight_decay=False,
         caution=False, maximize=False)(adopt)
