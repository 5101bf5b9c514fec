"""Recent optimizers users ask for: Schedule-Free AdamW, Prodigy, SOAP, and SAM as a wrapper.

Each optimizer is a transcription of its authors' PyTorch release (named in the registry entry),
written as an optax GradientTransformation whose update is `new_params - params`. `lr` may be a
float or an optax schedule, read at the transformation's own step count.

SAM is not a transformation of one gradient: it needs a second gradient at perturbed parameters.
Its registry entry declares that need (`StepNeeds.gradient`): the train step computes it with
`sam_gradient`, then the base optimizer updates with it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.learning_rate import lr_at
from jaxlab.optim.registry import StepNeeds, create, register
from jaxlab.optim.transforms import cast_like, flat_state, need_params, one_minus_pow, unzip


# ---------------------------------------------------------------------------------------------
# Schedule-Free AdamW


class ScheduleFreeAdamWState(NamedTuple):
  count: jax.Array  # the reference's `k`
  weight_sum: jax.Array
  lr_max: jax.Array
  beta1: jax.Array  # kept so `schedule_free_eval_params` needs only the state
  z: Any
  exp_avg_sq: Any


@register("schedule_free_adamw", reference="schedulefree.AdamWScheduleFree", lr=0.0025,
          betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0,
          weight_lr_power=2.0, foreach=True)
def schedule_free_adamw(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                        r=0.0, weight_lr_power=2.0,
                        foreach=True) -> optax.GradientTransformation:
  """schedulefree.AdamWScheduleFree (Defazio et al., arXiv 2405.15682), in train mode.

  The parameters the transformation updates are the reference's train-mode `p`, the gradient
  point `y`. Evaluate (and export) the average `x` instead: `schedule_free_eval_params(params,
  opt_state)` is the reference's `optimizer.eval()`. Weight decay is L2 at `y`, added to the
  Adam-normalised gradient. `warmup_steps` scales lr by (k+1)/warmup_steps; a schedule given as
  `lr` multiplies that, as a torch scheduler setting group['lr'] would. `foreach` only picks the
  reference's kernel; accepted and ignored.
  optax.contrib.schedule_free_adamw matches this for r=0 without warmup (checked to 1e-6 over 25
  steps) but not with `warmup_steps`: its inner AdamW reads the warmup schedule at its own count
  (lr 0 on the first step), one step behind the averaging weights. It has no `r` (polynomial
  averaging weights), and its `schedule_free_eval_params(state, params)` swaps the arguments.
  """
  del foreach
  beta1, beta2 = betas

  def init(params):
    return ScheduleFreeAdamWState(
        jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32), jnp.full([], -1.0, jnp.float32),
        jnp.asarray(beta1, jnp.float32), jax.tree.map(jnp.copy, params),
        optax.tree.zeros_like(params))

  def update(grads, state, params=None):
    need_params(params, "schedule_free_adamw")
    k1 = (state.count + 1).astype(jnp.float32)
    sched = jnp.minimum(k1 / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    lr_t = lr_at(lr, state.count) * sched
    lr_max = jnp.maximum(lr_t, state.lr_max)
    weight = k1 ** r * lr_max ** weight_lr_power
    weight_sum = state.weight_sum + weight
    ckp1 = jnp.where(weight_sum == 0, 0.0, weight / jnp.where(weight_sum == 0, 1.0, weight_sum))
    bias_correction2 = one_minus_pow(beta2, k1)

    def leaf(g, y, z, v):
      v = beta2 * v + (1 - beta2) * g * g
      g_hat = g / (jnp.sqrt(v / bias_correction2) + eps)
      if weight_decay != 0:
        g_hat = g_hat + weight_decay * y
      u = ckp1 * (z - y) + lr_t * (beta1 * (1 - ckp1) - 1) * g_hat
      return u, z - lr_t * g_hat, v

    out = jax.tree.map(leaf, grads, params, state.z, state.exp_avg_sq)
    u, z, v = unzip(out, grads, 3)
    return (cast_like(u, params),
            ScheduleFreeAdamWState(state.count + 1, weight_sum, lr_max, state.beta1, z, v))

  return optax.GradientTransformation(init, update)


def _schedule_free_states(opt_state) -> list[ScheduleFreeAdamWState]:
  return [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, ScheduleFreeAdamWState))
          if isinstance(s, ScheduleFreeAdamWState)]


def schedule_free_eval_params(params, opt_state):
  """The averaged iterate `x` to evaluate: `y/β1 + (1 - 1/β1)·z` (the reference's `eval()`).

  `params` are the training parameters (`y`); `opt_state` may be a chain containing the
  schedule_free_adamw state, or several of them over parameter groups (optax.partition: each
  holds `z` for its own group, optax.MaskedNode elsewhere).
  """
  states = _schedule_free_states(opt_state)
  if not states:
    raise ValueError("expected a schedule_free_adamw state in opt_state, found none")
  x = params
  for state in states:
    b1 = state.beta1
    x = jax.tree.map(
        lambda x, y, z, b1=b1: x if isinstance(z, optax.MaskedNode) else (y + (1 - 1 / b1) * (z - y)).astype(y.dtype),
        x, params, state.z)
  return x


def evaluation_params(params, opt_state):
  """The parameters to evaluate and export: schedule-free's `x` when it is used, else `params`."""
  return schedule_free_eval_params(params, opt_state) if _schedule_free_states(opt_state) else params


# ---------------------------------------------------------------------------------------------
# Prodigy


class ProdigyState(NamedTuple):
  count: jax.Array  # updates applied (reads the lr schedule)
  k: jax.Array  # the reference's `k`: steps that got past its early returns
  d: jax.Array
  d_max: jax.Array
  d_numerator: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  s: Any
  p0: Any


@register("prodigy", reference="prodigyopt.Prodigy", lr=1.0, betas=(0.9, 0.999), beta3=None,
          eps=1e-8, weight_decay=0.0, decouple=True, use_bias_correction=False,
          safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=float("inf"),
          fsdp_in_use=False, slice_p=1)
def prodigy(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0, decouple=True,
            use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0,
            growth_rate=float("inf"), fsdp_in_use=False,
            slice_p=1) -> optax.GradientTransformation:
  """prodigyopt.Prodigy (Mishchenko & Defazio, arXiv 2306.06101): Adam with a learned step size d.

  Weight decay is decoupled (`p ← p - wd·d·lr·p`, the default) or, with `decouple=False`, L2 in
  the gradient before everything else. The dot products and |s| sums run over the whole pytree,
  so under jit they are global over shards: `fsdp_in_use` (the reference's all-reduce switch) is
  accepted and not needed. `slice_p` > 1 (statistics on every p-th entry) is not supported.
  A step whose lr is 0, or whose accumulated |s| is 0, changes only what the reference changes.
  optax.contrib.prodigy equals this with use_bias_correction=True, decouple=True and
  growth_rate=inf (its `estim_lr0`, `estim_lr_coef` are `d0`, `d_coef`); it always bias-corrects
  and has no coupled decay, growth_rate or zero-denominator guard.
  """
  del fsdp_in_use
  if slice_p != 1:
    raise ValueError("prodigy: slice_p != 1 (an approximation to Prodigy) is not supported")
  beta1, beta2 = betas
  beta3 = beta2 ** 0.5 if beta3 is None else beta3

  def init(params):
    zeros = lambda: optax.tree.zeros_like(params)
    scalar = lambda v: jnp.asarray(v, jnp.float32)
    return ProdigyState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32), scalar(d0),
                        scalar(d0), scalar(0.0), zeros(), zeros(), zeros(),
                        jax.tree.map(jnp.copy, params))

  def update(grads, state, params=None):
    need_params(params, "prodigy")
    lr_t = lr_at(lr, state.count)
    active = lr_t > 0  # the reference skips every parameter of a group with lr 0
    d = state.d
    k1 = (state.k + 1).astype(jnp.float32)
    bias_correction = (jnp.sqrt(one_minus_pow(beta2, k1)) / one_minus_pow(beta1, k1)
                       if use_bias_correction else 1.0)
    dlr = d * lr_t * bias_correction
    if weight_decay != 0 and not decouple:
      grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)

    delta_numerator = (d / d0) * dlr * optax.tree.vdot(
        grads, jax.tree.map(lambda p0, p: p0 - p, state.p0, params))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)
    exp_avg = keep(jax.tree.map(lambda m, g: beta1 * m + d * (1 - beta1) * g, state.exp_avg,
                                grads), state.exp_avg)
    exp_avg_sq = keep(jax.tree.map(lambda v, g: beta2 * v + d * d * (1 - beta2) * g * g,
                                   state.exp_avg_sq, grads), state.exp_avg_sq)
    s_rate = (d / d0) * (d if safeguard_warmup else dlr)
    s = keep(jax.tree.map(lambda s, g: beta3 * s + s_rate * g, state.s, grads), state.s)
    d_denom = jnp.where(active, optax.tree.sum(jax.tree.map(jnp.abs, s)), 0.0)

    proceed = d_denom > 0  # the reference returns before touching d or the parameters
    d_numerator = state.d_numerator * beta3 + delta_numerator
    d_hat = d_coef * d_numerator / jnp.where(proceed, d_denom, 1.0)
    new_d = jnp.where(d == d0, jnp.maximum(d, d_hat), d)
    d_max = jnp.maximum(state.d_max, d_hat)
    new_d = jnp.minimum(d_max, new_d * growth_rate)

    def leaf(p, g, m, v):
      denom = jnp.sqrt(v) + new_d * eps
      u = m if beta1 > 0 else new_d * g  # without momentum: along d·g, with the updated d
      u = -dlr * u / denom
      if weight_decay != 0 and decouple:
        u = u - weight_decay * dlr * p
      return jnp.where(proceed, u, jnp.zeros_like(u))

    updates = jax.tree.map(leaf, params, grads, exp_avg, exp_avg_sq)
    pick = lambda new, old: jnp.where(proceed, new, old)
    return (cast_like(updates, params),
            ProdigyState(state.count + 1, state.k + proceed.astype(jnp.int32), pick(new_d, d),
                         pick(d_max, state.d_max), pick(d_numerator, state.d_numerator),
                         exp_avg, exp_avg_sq, s, state.p0))

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# SOAP


class SoapState(NamedTuple):
  count: jax.Array  # calls so far; the reference's state['step'] is count - 1 after the first
  exp_avg: Any  # kept in the eigenbasis, as the reference keeps it
  exp_avg_sq: Any
  # Every (d, d) statistic and eigenbasis, flattened and concatenated (leaf order, then dim): one
  # vector each, which `optax.tree_map_params` (the sharding code) leaves replicated; a scalar 0
  # where no dim is preconditioned (a group of 1-D parameters).
  gg: Any
  q: Any


def _preconditioned_dims(shape, max_precond_dim, precondition_1d):
  if len(shape) == 1:
    return (precondition_1d and shape[0] <= max_precond_dim,)
  return tuple(n <= max_precond_dim for n in shape)


def _outer(g, dim):
  others = [i for i in range(g.ndim) if i != dim]
  return jnp.tensordot(g, g, axes=(others, others))


def _project(x, qs, back=False):
  # Mode-k product with Q_k^T (into the eigenbasis) or Q_k (back) for every preconditioned dim.
  for k, q in enumerate(qs):
    if q is not None:
      x = jnp.moveaxis(jnp.tensordot(x, q, axes=([k], [1 if back else 0])), -1, k)
  return x


def _unpack(flat, shapes, max_precond_dim, precondition_1d):
  # The flat vector as per leaf, per dim: a (d, d) matrix, or None for an unpreconditioned dim.
  out, offset = [], 0
  for shape in shapes:
    mats = []
    for n, on in zip(shape, _preconditioned_dims(shape, max_precond_dim, precondition_1d)):
      mats.append(flat[offset:offset + n * n].reshape(n, n) if on else None)
      offset += n * n if on else 0
    out.append(tuple(mats))
  return tuple(out)


def _pack(mats):
  return flat_state([m for ms in mats for m in ms if m is not None])


def _eigenbasis(m):
  _, vectors = jnp.linalg.eigh(m + 1e-30 * jnp.eye(m.shape[0], dtype=m.dtype))
  return jnp.flip(vectors, axis=1)  # descending eigenvalues


def _refresh_basis(gg, qs, exp_avg_sq):
  # One power iteration and a QR per dim, columns sorted by estimated eigenvalue; the second
  # moment's entries follow their columns.
  new_qs = []
  for k, (m, o) in enumerate(zip(gg, qs)):
    if m is None:
      new_qs.append(None)
      continue
    est_eig = jnp.einsum("ij,ik,kj->j", o, m, o)
    order = jnp.argsort(-est_eig, stable=True)
    exp_avg_sq = jnp.take(exp_avg_sq, order, axis=k)
    new_qs.append(jnp.linalg.qr(m @ o[:, order])[0])
  return tuple(new_qs), exp_avg_sq


@register("soap", reference="SOAP (nikhilvyas/SOAP soap.py)", lr=3e-3, betas=(0.95, 0.95),
          shampoo_beta=-1, eps=1e-8, weight_decay=0.01, precondition_frequency=10,
          max_precond_dim=10000, merge_dims=False, precondition_1d=False, normalize_grads=False,
          data_format="channels_first", correct_bias=True)
def soap(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
         precondition_frequency=10, max_precond_dim=10000, merge_dims=False,
         precondition_1d=False, normalize_grads=False, data_format="channels_first",
         correct_bias=True) -> optax.GradientTransformation:
  """SOAP (Vyas et al., arXiv 2409.11321), the authors' soap.py: Adam in Shampoo's eigenbasis.

  Per parameter, each dim of size ≤ `max_precond_dim` (1-D ones only with `precondition_1d`)
  keeps an EMA of the gradient's mode outer product; Adam runs on the gradient rotated into their
  eigenbases and its step is rotated back. The first call only builds the statistics and the
  eigenbases (eigh) and leaves the parameters alone, so bias correction counts from the second;
  every `precondition_frequency` steps the bases are refreshed by one power iteration + QR.
  Weight decay is decoupled, applied after the step: `p ← (p - step)·(1 - lr·wd)`.
  `merge_dims` (reshaping conv kernels first) is not supported. Where a statistic is
  rank-deficient at the first step (a (5, 3) gradient's 5×5 outer product), its eigenbasis is not
  unique and any eigh, the reference's on another device included, may pick another one.
  optax has no SOAP.
  """
  if merge_dims:
    raise ValueError("soap: merge_dims=True is not supported")
  if data_format != "channels_first":
    raise ValueError("soap: only data_format='channels_first' (the reference's only one)")
  beta1, beta2 = betas
  sb = shampoo_beta if shampoo_beta >= 0 else beta2

  layout = (max_precond_dim, precondition_1d)
  shapes_of = lambda tree: [x.shape for x in jax.tree.leaves(tree)]

  def init(params):
    size = sum(n * n for shape in shapes_of(params)
               for n, on in zip(shape, _preconditioned_dims(shape, *layout)) if on)
    zeros = lambda: optax.tree.zeros_like(params)
    flat = flat_state([jnp.zeros([size], jnp.float32)])
    return SoapState(jnp.zeros([], jnp.int32), zeros(), zeros(), flat, flat)

  def first_call(grads, state, params):
    gg = tuple(tuple(None if m is None else m + (1 - sb) * (_outer(g, k) - m)
                     for k, m in enumerate(ms))
               for g, ms in zip(jax.tree.leaves(grads),
                                _unpack(state.gg, shapes_of(params), *layout)))
    q = tuple(tuple(None if m is None else _eigenbasis(m) for m in ms) for ms in gg)
    updates = optax.tree.zeros_like(params)
    return updates, SoapState(state.count + 1, state.exp_avg, state.exp_avg_sq, _pack(gg),
                              _pack(q))

  def later_call(grads, state, params):
    step = state.count.astype(jnp.float32)  # the reference's state['step']
    lr_t = lr_at(lr, state.count)
    step_size = lr_t
    if correct_bias:
      step_size = step_size * jnp.sqrt(one_minus_pow(beta2, step)) / one_minus_pow(beta1, step)
    refresh = state.count % precondition_frequency == 0
    treedef = jax.tree.structure(params)
    leaves = zip(treedef.flatten_up_to(grads), treedef.flatten_up_to(params),
                 treedef.flatten_up_to(state.exp_avg), treedef.flatten_up_to(state.exp_avg_sq),
                 _unpack(state.gg, shapes_of(params), *layout),
                 _unpack(state.q, shapes_of(params), *layout))
    outs = []
    for g, p, m, v, gg, qs in leaves:
      g_rot = _project(g, qs)
      m = beta1 * m + (1 - beta1) * g_rot
      v = beta2 * v + (1 - beta2) * g_rot * g_rot
      direction = _project(m / (jnp.sqrt(v) + eps), qs, back=True)
      if normalize_grads:
        direction = direction / (1e-30 + jnp.sqrt(jnp.mean(direction ** 2)))
      stepped = p - step_size * direction
      u = -step_size * direction - lr_t * weight_decay * stepped if weight_decay > 0 else (
          -step_size * direction)
      gg = tuple(None if s is None else s + (1 - sb) * (_outer(g, k) - s)
                 for k, s in enumerate(gg))

      def rotate(m, v, gg=gg, qs=qs):
        # The momentum goes back to the parameter basis and into the refreshed one.
        new_qs, v = _refresh_basis(gg, qs, v)
        return _project(_project(m, qs, back=True), new_qs), v, new_qs

      m, v, qs = jax.lax.cond(refresh, rotate, lambda m, v: (m, v, qs), m, v)
      outs.append((u, m, v, gg, qs))
    col = lambda i: [o[i] for o in outs]
    return (cast_like(treedef.unflatten(col(0)), params),
            SoapState(state.count + 1, treedef.unflatten(col(1)), treedef.unflatten(col(2)),
                      _pack(col(3)), _pack(col(4))))

  def update(grads, state, params=None):
    need_params(params, "soap")
    return jax.lax.cond(state.count == 0, first_call, later_call, grads, state, params)

  return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# SAM


def sam_perturbation(grads, params, rho=0.05, adaptive=False):
  """The ascent step `e_w` of SAM's first_step: `rho·g/‖g‖`, or ASAM's `rho·p²·g/‖|p|·g‖`.

  The norm is global over the pytree, with 1e-12 added as in the reference.
  """
  scaled = jax.tree.map(lambda g, p: jnp.abs(p) * g, grads, params) if adaptive else grads
  scale = rho / (optax.tree.norm(scaled) + 1e-12)
  return jax.tree.map(lambda g, p: ((p * p) if adaptive else 1.0) * g * scale, grads, params)


def sam_gradient(loss_fn: Callable, params, *args, rho=0.05, adaptive=False, has_aux=False):
  """SAM's gradient (Foret et al., arXiv 2010.01412; ASAM, Kwon et al., arXiv 2102.11600).

  As `jax.value_and_grad(loss_fn, has_aux=has_aux)(params, *args)`, except that the gradient is
  taken at `params + e_w` (see `sam_perturbation`), the point the reference's `first_step`
  moves to; the loss (and aux) are those at `params`. The inner optimizer then updates `params`
  with it, as the reference's `second_step` does after restoring the weights. Costs two forward
  and backward passes; randomness in `loss_fn` (dropout) sees the same `args` in both.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
  value, grads = grad_fn(params, *args)
  e_w = sam_perturbation(grads, params, rho, adaptive)
  perturbed = jax.tree.map(lambda p, e: p + e, params, e_w)
  _, sam_grads = grad_fn(perturbed, *args)
  return value, sam_grads


class SamTransformation(NamedTuple):
  """The inner optimizer (init, update) with SAM's settings; a train step that finds `rho` on its
  transformation gets its gradient from `sam_gradient(..., rho=tx.rho, adaptive=tx.adaptive)`."""
  init: Callable
  update: Callable
  rho: float
  adaptive: bool


def sam(base_optimizer: str | optax.GradientTransformation = "sgd", rho=0.05, adaptive=False,
        **base_hparams) -> SamTransformation:
  """SAM as the reference (davda54/sam `SAM(params, base_optimizer, rho, adaptive, **kwargs)`)
  wraps an optimizer: given by name (with its hyperparameters, `lr` included) or as a
  transformation.

  optax.contrib.sam differs: it is a transformation that alternates adversarial and real steps
  (each SAM step costs two `update` calls, the data pipeline feeding both), has no ASAM
  `adaptive`, and normalises per call with its own `sync_period` conventions.
  """
  if isinstance(base_optimizer, str):
    tx = create(base_optimizer, **base_hparams)
  elif base_hparams:
    raise ValueError("sam: hyperparameters go with an optimizer name, not a transformation")
  else:
    tx = base_optimizer
  return SamTransformation(tx.init, tx.update, rho, adaptive)


def _sam_needs(hparams: dict) -> StepNeeds:
  """The train step takes SAM's gradient (two forward/backward passes) for the base update."""
  if not isinstance(hparams["rho"], jax.Array) and hparams["rho"] < 0:
    raise ValueError(f"sam: rho must be non-negative, got {hparams['rho']}")
  return StepNeeds(gradient=functools.partial(sam_gradient, rho=hparams["rho"],
                                              adaptive=bool(hparams["adaptive"]), has_aux=True))


# The reference's **kwargs (the base optimizer's hyperparameters, lr and weight_decay included)
# are this entry's hyperparameters too: `hparams = {"base_optimizer": "adamw", "rho": 0.05,
# "weight_decay": 0.05}`.
@register("sam", reference="SAM (davda54/sam)", step_needs=_sam_needs, wraps="base_optimizer",
          base_optimizer="sgd", rho=0.05, adaptive=False)
def _sam(base_optimizer, rho, adaptive, **base_hparams):
  return sam(base_optimizer, rho=rho, adaptive=adaptive, **base_hparams)
