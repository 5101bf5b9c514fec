"""Muon (timm.optim.Muon, timm 1.0.31, algo='muon'): MomentUm Orthogonalized by Newton-Schulz.

For each parameter timm routes to Muon (`_is_suitable_for_muon`: at least 2 non-unit dims, no unit
dim in the first two, and after flattening (out, in*spatial) both sides >= 4 with aspect ratio
<= 128) the step is, as timm writes it:
    p *= 1 - lr*weight_decay;  buf = lerp(buf, g, 1 - momentum)
    u = lerp(g, buf, momentum) if nesterov else buf
    p -= lr * scale(u) * NewtonSchulz(u.reshape(out, -1))
with `scale` timm's `adjust_lr_fn` rule ('match_rms_adamw': 0.2*sqrt(max(out, in)) by default).
Every other parameter gets timm's fallback: AdamW (NAdamW-style extra lerp when nesterov) with
lr*fallback_lr_scale, `betas`, `eps` and decoupled decay `p *= 1 - lr*wd`.

Newton-Schulz runs as timm runs it by default: in bfloat16, each op (norm, division, the fused
addmm's) computed in float32 and rounded to bfloat16, so results follow timm's bf16 CPU kernels.
`build(..., ns_dtype="float32")` (not a registry hyperparameter) skips the rounding, for tests.

Only timm's defaults are supported for conv_mode ('flatten'), algo ('muon') and scale_eps (False);
other values raise ValueError. `normalize_spatial` only acts in conv_mode='batched' so it is
accepted and unused; torch-only `capturable`/`verbose` are left out. optax.contrib.muon differs
(its own coefficients, lr scaling, Adam fallback and nesterov default), so it is not used.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.learning_rate import lr_at
from jaxlab.optim.registry import register
from jaxlab.optim.transforms import cast_like, need_params, one_minus_pow, unzip

COEFFICIENTS = {
    "original": [(3.4445, -4.7750, 2.0315)],
    "quintic": [(4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
                (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012)],
    "polar_express": [
        (8.237312490495555, -23.157747414558198, 16.680568411445915),
        (4.082441999064835, -2.893047735332586, 0.5252849256975648),
        (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
        (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
        (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
        (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
        (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
        (1.8749994008682747, -1.2499988017229169, 0.3749994008546422)],
    "polar_express_safer": [
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.0429299351667245, -2.808917465908704, 0.5000178451051299),
        (3.8916678022926563, -2.7724841532176825, 0.5060648178503389),
        (3.285753657755658, -2.3681294933425394, 0.46449024233003117),
        (2.3005307116270983, -1.6111665557258408, 0.3833374427545273),
        (1.8631210546382593, -1.2042160621002727, 0.3421879560523383),
        (1.8382572152247512, -1.1779263289537742, 0.3396513038637379),
        (1.8749999923301852, -1.2499999836060613, 0.374999991275876)],
}


class MuonState(NamedTuple):
  count: jax.Array  # updates applied so far
  mu: Any  # Muon momentum buffer, or the fallback's exp_avg
  nu: Any  # the fallback's exp_avg_sq; MaskedNode for Muon leaves (timm keeps none)


def suitable_for_muon(shape, min_dim_size=4, max_aspect_ratio=128.0) -> bool:
  """timm.optim.muon._is_suitable_for_muon on a shape."""
  if len(shape) < 2 or sum(1 for d in shape if d > 1) < 2 or shape[0] == 1 or shape[1] == 1:
    return False
  dims = (shape[0], math.prod(shape[1:])) if len(shape) >= 3 else tuple(shape)
  return min(dims) >= min_dim_size and max(dims) / min(dims) <= max_aspect_ratio


def _resolve_coefficients(value):
  if isinstance(value, str):
    if value not in COEFFICIENTS:
      raise ValueError(f"Unknown coefficients preset '{value}'. Valid options: {', '.join(sorted(COEFFICIENTS))}")
    return COEFFICIENTS[value]
  if len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
    return [tuple(float(v) for v in value)]
  return [tuple(float(v) for v in item) for item in value]


def _lr_scale(out_chs, in_chs, adjust_lr_fn):
  if not adjust_lr_fn:
    return 1.0
  if adjust_lr_fn == "original":
    return max(1, out_chs / in_chs) ** 0.5
  if adjust_lr_fn == "match_rms_adamw":
    return 0.2 * max(out_chs, in_chs) ** 0.5
  if adjust_lr_fn == "rms_to_rms":
    return (out_chs / in_chs) ** 0.5
  raise ValueError(f'Invalid scaling function "{adjust_lr_fn}" for Muon')


def newton_schulz(g, steps, coefficients, eps, safety_factor, ns_dtype="bfloat16"):
  """timm's zeropower_via_newtonschulz on a 2-D array (float32 math, bf16 rounding per op)."""
  if ns_dtype == "bfloat16":
    rnd = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
  elif ns_dtype == "float32":
    rnd = lambda x: x
  else:
    raise ValueError(f"ns_dtype must be 'bfloat16' or 'float32', got {ns_dtype!r}")
  seq = coefficients[:steps] if steps <= len(coefficients) else \
      list(coefficients) + [coefficients[-1]] * (steps - len(coefficients))
  mm = lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
  x = rnd(g.astype(jnp.float32))
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  norm = rnd(rnd(jnp.sqrt(jnp.sum(jnp.square(x)))) * safety_factor)
  x = rnd(x / jnp.maximum(norm, eps))
  for a, b, c in seq:
    A = rnd(mm(x, x.T))
    B = rnd(b * A + c * mm(A, A))  # torch.addmm(A, A, A, beta=b, alpha=c): one rounding
    x = rnd(a * x + mm(B, x))
  return x.T if transposed else x


@register("muon", reference="timm.optim.Muon", lr=0.02, weight_decay=0.0, momentum=0.95,
          nesterov=False, ns_steps=5, ns_coefficients="quintic", eps=1e-7, safety_factor=1.0,
          adjust_lr_fn="match_rms_adamw", conv_mode="flatten", normalize_spatial=True,
          adamw_lr=None, fallback_lr_scale=1.0, betas=(0.9, 0.95), algo="muon", scale_eps=False)
def build(*, lr, weight_decay, momentum, nesterov, ns_steps, ns_coefficients, eps, safety_factor,
          adjust_lr_fn, conv_mode, normalize_spatial, adamw_lr, fallback_lr_scale, betas, algo,
          scale_eps, ns_dtype="bfloat16") -> optax.GradientTransformation:
  del normalize_spatial  # acts only in conv_mode='batched'
  if conv_mode != "flatten":
    raise ValueError(f"muon: only conv_mode='flatten' (timm's default) is supported, got {conv_mode!r}")
  if algo != "muon":
    raise ValueError(f"muon: only algo='muon' is supported (AdaMuon is not transcribed), got {algo!r}")
  if scale_eps:
    raise ValueError("muon: scale_eps=True (muP eps damping) is not supported")
  if adamw_lr is not None:  # timm's deprecated spelling of fallback_lr_scale
    if callable(lr) or lr == 0:
      raise ValueError("muon: adamw_lr needs a nonzero float lr; use fallback_lr_scale")
    fallback_lr_scale = adamw_lr / lr
  coefficients = _resolve_coefficients(ns_coefficients)
  _lr_scale(1, 1, adjust_lr_fn)  # fail early on an unknown rule
  beta1, beta2 = betas

  def init(params):
    mu = jax.tree.map(jnp.zeros_like, params)
    nu = jax.tree.map(lambda p: optax.MaskedNode() if suitable_for_muon(p.shape) else jnp.zeros_like(p), params)
    return MuonState(jnp.zeros([], jnp.int32), mu, nu)

  def update(updates, state, params=None):
    need_params(params, "muon")
    lr_t = lr_at(lr, state.count)
    step = optax.safe_increment(state.count)
    fb_lr = lr_t * fallback_lr_scale
    bc1, bc2_sqrt = one_minus_pow(beta1, step), jnp.sqrt(one_minus_pow(beta2, step))

    def one(g, p, mu, nu):
      g = g.astype(jnp.float32)
      if suitable_for_muon(p.shape):
        buf = mu + (1 - momentum) * (g - mu)
        u = g + momentum * (buf - g) if nesterov else buf
        ortho = newton_schulz(u.reshape(u.shape[0], -1), ns_steps, coefficients, eps,
                              safety_factor, ns_dtype)
        scale = _lr_scale(ortho.shape[0], ortho.shape[1], adjust_lr_fn)
        return -lr_t * weight_decay * p - lr_t * scale * ortho.reshape(p.shape), buf, nu
      exp_avg = mu + (1 - beta1) * (g - mu)
      exp_avg_sq = nu * beta2 + (1 - beta2) * g * g
      m = exp_avg + (1 - beta1) * (g - exp_avg) if nesterov else exp_avg  # timm's nadamw
      denom = jnp.sqrt(exp_avg_sq) / bc2_sqrt + eps
      return -fb_lr * weight_decay * p - (fb_lr / bc1) * m / denom, exp_avg, exp_avg_sq

    # nu holds MaskedNode at Muon leaves: a subtree of the grads' leaf, passed through as is.
    new_updates, mu, nu = unzip(jax.tree.map(one, updates, params, state.mu, state.nu), updates, 3)
    return cast_like(new_updates, params), MuonState(step, mu, nu)

  return optax.GradientTransformation(init, update)
