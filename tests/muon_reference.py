"""NumPy (float64) transcription of timm.optim.Muon's `step()` (timm 1.0.31, algo='muon').

Muon (momentum lerp, optional Nesterov, Newton-Schulz orthogonalization, shape-based lr scale,
decoupled decay `p *= 1 - lr*wd`) for the parameters timm routes to Muon (`_is_suitable_for_muon`),
and timm's AdamW fallback (NAdamW when nesterov) for the others. `ns_dtype="bfloat16"` emulates
timm's default bfloat16 Newton-Schulz: every torch op result rounded to bfloat16 (float32 math, as
torch's CPU bf16 kernels do); `ns_dtype="float64"` runs it exactly. Cross-checked against timm
1.0.31 on torch 2.13 CPU when written. Used by tests/test_optim_muon.py.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

COEFFICIENTS = {
    "original": [(3.4445, -4.7750, 2.0315)],
    "quintic": [(4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
                (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012)],
}


def _bf16(x):
  return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def suitable_for_muon(shape, min_dim_size=4, max_aspect_ratio=128.0):
  """timm.optim.muon._is_suitable_for_muon."""
  if len(shape) < 2 or sum(1 for d in shape if d > 1) < 2 or shape[0] == 1 or shape[1] == 1:
    return False
  dims = (shape[0], math.prod(shape[1:])) if len(shape) >= 3 else shape
  return min(dims) >= min_dim_size and max(dims) / min(dims) <= max_aspect_ratio


def newton_schulz(g, steps, coefficients, eps, safety_factor, ns_dtype="float64"):
  rnd = _bf16 if ns_dtype == "bfloat16" else (lambda x: x)
  seq = coefficients[:steps] if steps <= len(coefficients) else \
      coefficients + [coefficients[-1]] * (steps - len(coefficients))
  x = rnd(g)
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  norm = rnd(rnd(np.linalg.norm(x)) * safety_factor)
  x = rnd(x / max(norm, eps))
  for a, b, c in seq:
    A = rnd(x @ x.T)
    B = rnd(b * A + c * (A @ A))
    x = rnd(a * x + B @ x)
  return x.T if transposed else x


def lr_scale(shape, adjust_lr_fn):
  out_chs, in_chs = shape[-2], shape[-1]
  if adjust_lr_fn is None:
    return 1.0
  if adjust_lr_fn == "original":
    return max(1, out_chs / in_chs) ** 0.5
  if adjust_lr_fn == "match_rms_adamw":
    return 0.2 * max(out_chs, in_chs) ** 0.5
  if adjust_lr_fn == "rms_to_rms":
    return (out_chs / in_chs) ** 0.5
  raise ValueError(adjust_lr_fn)


class Muon:
  def __init__(self, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=False, ns_steps=5,
               ns_coefficients="quintic", eps=1e-7, safety_factor=1.0,
               adjust_lr_fn="match_rms_adamw", fallback_lr_scale=1.0, betas=(0.9, 0.95),
               ns_dtype="float64"):
    self.__dict__.update(locals())
    self.coeffs = COEFFICIENTS[ns_coefficients] if isinstance(ns_coefficients, str) else ns_coefficients
    self.state = {}

  def step(self, params, grads):
    for i, (p, g) in enumerate(zip(params, grads)):
      if suitable_for_muon(p.shape):
        self._muon(i, p, g)
      else:
        self._fallback(i, p, g)

  def _muon(self, i, p, g):
    buf = self.state.setdefault(i, {"momentum_buffer": np.zeros_like(p)})["momentum_buffer"]
    lr, m = self.lr, self.momentum
    p *= 1 - lr * self.weight_decay
    buf += (1 - m) * (g - buf)  # lerp_(grad, 1 - momentum)
    update = g + m * (buf - g) if self.nesterov else buf.copy()
    u2 = update.reshape(update.shape[0], -1)
    ortho = newton_schulz(u2, self.ns_steps, self.coeffs, self.eps, self.safety_factor, self.ns_dtype)
    scale = lr_scale(ortho.shape, self.adjust_lr_fn)
    p += -lr * scale * ortho.reshape(p.shape)

  def _fallback(self, i, p, g):
    st = self.state.setdefault(i, {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)})
    beta1, beta2 = self.betas
    lr = self.lr * self.fallback_lr_scale
    st["step"] += 1
    p *= 1 - lr * self.weight_decay
    st["exp_avg"] += (1 - beta1) * (g - st["exp_avg"])
    st["exp_avg_sq"][...] = st["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
    step_size = lr / (1 - beta1 ** st["step"])
    denom = np.sqrt(st["exp_avg_sq"]) / math.sqrt(1 - beta2 ** st["step"]) + self.eps
    exp_avg = st["exp_avg"]
    if self.nesterov:  # timm's nadamw: one more lerp toward the gradient, not stored
      exp_avg = exp_avg + (1 - beta1) * (g - exp_avg)
    p += -step_size * exp_avg / denom
