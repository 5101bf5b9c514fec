"""Research optimizers outside torch.optim: Adan, NovoGrad, Adafactor, AdaBound, SophiaG, ADOPT.

Each is a transcription of its PyTorch reference's `step()` (named in the registry entry), written
as an optax GradientTransformation whose update is `new_params - params`. `lr` may be a float or an
optax schedule, read at the transformation's own step count.

State that is one number per parameter (NovoGrad's layer-wise second moment) or has another shape
than its parameter (Adafactor's factored row/column statistics) is kept as one flat vector per
kind, so `optax.tree_map_params` (the sharding code) replicates it instead of sharding it with a
parameter's spec of another rank.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.learning_rate import lr_at
from jaxlab.optim.registry import register


def _need_params(params, name):
  if params is None:
    raise ValueError(f"{name} needs `params` in update(): its step reads the parameters")


def _cast_like(updates, params):
  # Updates are computed as `new_p - p` worked out by hand (not subtracted), so a step much
  # smaller than |p| keeps its float32 precision.
  return jax.tree.map(lambda u, p: u.astype(p.dtype), updates, params)


def _caution_mask(exp_avg, grad):
  # 'Cautious Optimizers' (arXiv 2411.16085) as timm writes it: keep the momentum entries that
  # agree in sign with the gradient, rescaled by the kept fraction (at least 1e-3).
  mask = (exp_avg * grad > 0).astype(grad.dtype)
  return mask / jnp.maximum(jnp.mean(mask), 1e-3)


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
    _need_params(params, "adan")
    step = state.count + 1
    t = step.astype(jnp.float32)
    lr_t = lr_at(lr, state.count)
    bias_correction1 = 1 - beta1 ** t
    bias_correction2 = 1 - beta2 ** t
    bias_correction3_sqrt = jnp.sqrt(1 - beta3 ** t)

    def leaf(g, p, m, n, d, prev):
      diff = jnp.where(step == 1, jnp.zeros_like(g), g - prev)
      m = m + (1 - beta1) * (g - m)
      d = beta2 * d + (1 - beta2) * diff
      nesterov_grad = g + beta2 * diff
      n = beta3 * n + (1 - beta3) * nesterov_grad * nesterov_grad
      denom = jnp.sqrt(n) / bias_correction3_sqrt + eps
      m_used = m * _caution_mask(m, g) if caution else m
      step_dir = (lr_t / bias_correction1) * m_used / denom + (lr_t * beta2 / bias_correction2) * d / denom
      if no_prox:  # p·(1 - lr·wd) - step
        u = -lr_t * weight_decay * p - step_dir
      else:  # (p - step) / (1 + lr·wd)
        u = -(step_dir + lr_t * weight_decay * p) / (1 + lr_t * weight_decay)
      return u, m, n, d

    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq, state.exp_avg_diff,
                       state.prev_grad)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)
    return (_cast_like(pick(0), params),
            AdanState(step, pick(1), pick(2), pick(3), grads))

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
  if corrected_weight_decay and callable(lr):
    raise ValueError("novograd: corrected_weight_decay needs a float lr (timm snapshots the peak lr)")

  def init(params):
    n = len(jax.tree.leaves(params))
    return NovoGradState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params),
                         jnp.zeros([n], jnp.float32), jnp.zeros([n], jnp.float32))

  def update(grads, state, params=None):
    _need_params(params, "novograd")
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
    n = len(g_leaves)
    stack = lambda xs: jnp.stack(xs) if n else jnp.zeros([0], jnp.float32)
    return (_cast_like(treedef.unflatten(new_u), params),
            NovoGradState(state.count + 1, treedef.unflatten(new_m), stack(new_v),
                          stack(new_vmax)))

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
    flat = lambda kind: jnp.zeros([sizes[kind]], jnp.float32)
    exp_avg = optax.tree.zeros_like(params) if beta1 is not None else ()
    return AdafactorState(jnp.zeros([], jnp.int32), exp_avg, flat("row"), flat("col"), flat("full"))

  def update(grads, state, params=None):
    _need_params(params, "adafactor")
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
        u = m * _caution_mask(m, g) if caution else m
      if weight_decay != 0:
        u = u + weight_decay * lr_t * p
      new_u.append(-u)
    cat = lambda xs: jnp.concatenate(xs) if xs else jnp.zeros([0], jnp.float32)
    exp_avg = treedef.unflatten(new_m) if beta1 is not None else ()
    return (_cast_like(treedef.unflatten(new_u), params),
            AdafactorState(step, exp_avg, cat(rows), cat(cols), cat(fulls)))

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# AdaBound (the authors' `adabound` package)


class AdaBoundState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  max_exp_avg_sq: Any  # () unless amsbound


def adabound(lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0.0,
             amsbound=False) -> optax.GradientTransformation:
  """adabound.AdaBound (Luo et al., ICLR 2019): Adam whose per-entry step is clipped to bounds
  that converge to `final_lr`.

  As the authors: L2 weight decay in the gradient; the bounds are
  `final_lr·lr_t/base_lr·(1 ∓ 1/(gamma·t [+1]))` with `base_lr` the initial lr (`lr(0)` for a
  schedule), so an lr schedule scales them; eps added to `sqrt(v)` without bias correction, the
  correction folded into the step size. optax has no AdaBound.
  """
  beta1, beta2 = betas

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return AdaBoundState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros() if amsbound else ())

  def update(grads, state, params=None):
    _need_params(params, "adabound")
    step = state.count + 1
    t = step.astype(jnp.float32)
    lr_t = lr_at(lr, state.count)
    base_lr = lr_at(lr, jnp.zeros([], jnp.int32))
    step_size = lr_t * jnp.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    final = final_lr * lr_t / base_lr
    lower = final * (1 - 1 / (gamma * t + 1))
    upper = final * (1 + 1 / (gamma * t))

    def leaf(g, p, m, v, vmax):
      if weight_decay != 0:
        g = g + weight_decay * p
      m = beta1 * m + (1 - beta1) * g
      v = beta2 * v + (1 - beta2) * g * g
      if amsbound:
        vmax = jnp.maximum(vmax, v)
      denom = jnp.sqrt(vmax if amsbound else v) + eps
      return -jnp.clip(step_size / denom, lower, upper) * m, m, v, vmax

    vmax_tree = state.max_exp_avg_sq if amsbound else state.exp_avg
    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq, vmax_tree)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)
    return _cast_like(pick(0), params), AdaBoundState(step, pick(1), pick(2), pick(3) if amsbound else ())

  return optax.GradientTransformation(init, update)


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
    _need_params(params, "sophia")
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
    pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)
    return _cast_like(pick(0), params), SophiaState(state.count + 1, pick(1), hessian)

  return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------------
# ADOPT (timm.optim.Adopt)


class AdoptState(NamedTuple):
  count: jax.Array
  exp_avg: Any
  exp_avg_sq: Any


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
  if corrected_weight_decay and callable(lr):
    raise ValueError("adopt: corrected_weight_decay needs a float lr (timm snapshots the peak lr)")

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return AdoptState(jnp.zeros([], jnp.int32), zeros(), zeros())

  def update(grads, state, params=None):
    _need_params(params, "adopt")
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
      m_used = m_new * _caution_mask(m_new, g) if caution else m_new
      u = decay - lr_t * m_used
      v_new = beta2 * v + (1 - beta2) * g * g
      return (jnp.where(first, jnp.zeros_like(u), u), jnp.where(first, m, m_new),
              jnp.where(first, v + g * g, v_new))

    out = jax.tree.map(leaf, grads, params, state.exp_avg, state.exp_avg_sq)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)
    return _cast_like(pick(0), params), AdoptState(step, pick(1), pick(2))

  return optax.GradientTransformation(init, update)


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
register("sophia", reference="Liuhong99/Sophia sophia.SophiaG", lr=1e-4, betas=(0.965, 0.99),
         rho=0.04, weight_decay=1e-1, maximize=False, bs=5120)(sophia)
register("adopt", reference="timm.optim.Adopt", lr=1e-3, betas=(0.9, 0.9999), eps=1e-6,
         clip_exp=0.333, weight_decay=0.0, decoupled=False, corrected_weight_decay=False,
         caution=False, maximize=False)(adopt)
