"""NumPy (float64) transcriptions of timm.optim's SGDP, AdamP, Lamb, Lars, Lion and AdaBelief `step()`.

Each class mirrors its timm 1.0.31 class (single-tensor path) line by line: `step(params, grads)`
updates a list of float64 arrays in place, with per-parameter state as timm keeps it. Used by
tests/test_optim_timm.py; cross-checked against timm 1.0.31 on torch 2.13 CPU (float64) when written.
"""

from __future__ import annotations

import math

import numpy as np


def _caution_mask(update, grad):
  mask = (update * grad > 0).astype(grad.dtype)
  return mask / max(mask.mean(), 1e-3)


def _cosine_similarity(x, y, eps):  # torch.nn.functional.cosine_similarity over dim=1
  xn = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
  yn = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), eps)
  return ((x / xn) * (y / yn)).sum(axis=1)


def projection(p, grad, perturb, delta, wd_ratio, eps, caution=False, hits=None):
  """timm.optim.adamp.projection; appends 'channel'/'layer'/None to `hits` (for the tests)."""
  expand_size = (-1,) + (1,) * (p.ndim - 1)
  for name, view_func in (("channel", lambda x: x.reshape(x.shape[0], -1)),
                          ("layer", lambda x: x.reshape(1, -1))):
    param_view = view_func(p)
    grad_view = view_func(grad)
    cosine_sim = np.abs(_cosine_similarity(grad_view, param_view, eps))
    if cosine_sim.max() < delta / math.sqrt(param_view.shape[1]):
      p_n = p / (np.linalg.norm(param_view, axis=1) + eps).reshape(expand_size)
      perturb = perturb - p_n * view_func(p_n * perturb).sum(axis=1).reshape(expand_size)
      if caution:
        grad_radial = p_n * view_func(p_n * grad).sum(axis=1).reshape(expand_size)
        grad_perp = grad - grad_radial
        perturb = perturb * _caution_mask(perturb, grad_perp)
        perturb = perturb - p_n * view_func(p_n * perturb).sum(axis=1).reshape(expand_size)
      if hits is not None:
        hits.append(name)
      return perturb, wd_ratio
  if caution:
    perturb = perturb * _caution_mask(perturb, grad)
  if hits is not None:
    hits.append(None)
  return perturb, 1.0


class SGDP:  # timm.optim.SGDP
  def __init__(self, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, eps=1e-8,
               delta=0.1, wd_ratio=0.1, caution=False):
    self.lr, self.momentum, self.dampening, self.wd = lr, momentum, dampening, weight_decay
    self.nesterov, self.eps, self.delta, self.wd_ratio = nesterov, eps, delta, wd_ratio
    self.caution, self.state, self.hits = caution, {}, []

  def step(self, params, grads):
    for i, (p, grad) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(momentum=np.zeros_like(p)))
      buf = s["momentum"] = s["momentum"] * self.momentum + grad * (1. - self.dampening)
      d_p = grad + self.momentum * buf if self.nesterov else buf.copy()
      wd_ratio = 1.
      if p.ndim > 1:
        d_p, wd_ratio = projection(p, grad, d_p, self.delta, self.wd_ratio, self.eps, self.caution,
                                   self.hits)
      elif self.caution:
        d_p = d_p * _caution_mask(d_p, grad)
      if self.wd != 0:
        p *= 1. - self.lr * self.wd * wd_ratio / (1 - self.momentum)
      p -= self.lr * d_p


class AdamP:  # timm.optim.AdamP
  def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, delta=0.1,
               wd_ratio=0.1, nesterov=False, caution=False):
    self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
    self.delta, self.wd_ratio, self.nesterov, self.caution = delta, wd_ratio, nesterov, caution
    self.state, self.hits = {}, []

  def step(self, params, grads):
    beta1, beta2 = self.betas
    for i, (p, grad) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p)))
      s["step"] += 1
      bias_correction1 = 1 - beta1 ** s["step"]
      bias_correction2 = 1 - beta2 ** s["step"]
      exp_avg = s["exp_avg"] = s["exp_avg"] * beta1 + grad * (1 - beta1)
      exp_avg_sq = s["exp_avg_sq"] = s["exp_avg_sq"] * beta2 + grad * grad * (1 - beta2)
      denom = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + self.eps
      step_size = self.lr / bias_correction1
      if self.nesterov:
        perturb = (beta1 * exp_avg + (1 - beta1) * grad) / denom
      else:
        perturb = exp_avg / denom
      wd_ratio = 1.
      if p.ndim > 1:
        perturb, wd_ratio = projection(p, grad, perturb, self.delta, self.wd_ratio, self.eps,
                                       self.caution, self.hits)
      elif self.caution:
        perturb = perturb * _caution_mask(perturb, grad)
      if self.wd > 0:
        p *= 1. - self.lr * self.wd * wd_ratio
      p -= step_size * perturb


class Lamb:  # timm.optim.Lamb
  def __init__(self, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
               grad_averaging=True, max_grad_norm=1.0, trust_clip=False, always_adapt=False,
               caution=False, decoupled_decay=False):
    self.lr, self.bias_correction, self.betas, self.eps, self.wd = (
        lr, bias_correction, betas, eps, weight_decay)
    self.grad_averaging, self.max_grad_norm, self.trust_clip = grad_averaging, max_grad_norm, trust_clip
    self.always_adapt, self.caution, self.decoupled = always_adapt, caution, decoupled_decay
    self.t, self.state = 0, {}

  def step(self, params, grads):
    clip = None
    if self.max_grad_norm is not None:
      global_norm = np.linalg.norm([np.linalg.norm(g) for g in grads])
      clip = max(global_norm / self.max_grad_norm, 1.0)
    beta1, beta2 = self.betas
    beta3 = 1 - beta1 if self.grad_averaging else 1.0
    self.t += 1
    if self.bias_correction:
      bc1, bc2 = 1 - beta1 ** self.t, 1 - beta2 ** self.t
    else:
      bc1, bc2 = 1.0, 1.0
    for i, (p, grad) in enumerate(zip(params, grads)):
      if clip is not None:
        grad = grad / clip
      s = self.state.setdefault(i, dict(exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p)))
      s["exp_avg"] = s["exp_avg"] * beta1 + grad * beta3
      s["exp_avg_sq"] = s["exp_avg_sq"] * beta2 + grad * grad * (1 - beta2)
      denom = np.sqrt(s["exp_avg_sq"]) / bc2 ** 0.5 + self.eps
      update = (s["exp_avg"] / bc1) / denom
      if self.caution:
        update = update * _caution_mask(update, grad)
      if self.wd != 0:
        if self.decoupled:
          p += p * (-self.lr * self.wd)
        else:
          update = update + self.wd * p
      if self.wd != 0 or self.always_adapt:
        w_norm, g_norm = np.linalg.norm(p), np.linalg.norm(update)
        trust_ratio = w_norm / g_norm if (w_norm > 0 and g_norm > 0) else 1.0
        if self.trust_clip:
          trust_ratio = min(trust_ratio, 1.0)
        update = update * trust_ratio
      p -= self.lr * update


class Lars:  # timm.optim.Lars
  def __init__(self, lr=1.0, momentum=0, dampening=0, weight_decay=0, nesterov=False,
               trust_coeff=0.001, eps=1e-8, trust_clip=False, always_adapt=False):
    self.lr, self.momentum, self.dampening, self.wd, self.nesterov = (
        lr, momentum, dampening, weight_decay, nesterov)
    self.trust_coeff, self.eps, self.trust_clip, self.always_adapt = (
        trust_coeff, eps, trust_clip, always_adapt)
    self.state = {}

  def step(self, params, grads):
    for i, (p, grad) in enumerate(zip(params, grads)):
      if self.wd != 0 or self.always_adapt:
        w_norm, g_norm = np.linalg.norm(p), np.linalg.norm(grad)
        trust_ratio = self.trust_coeff * w_norm / (g_norm + w_norm * self.wd + self.eps)
        if not (w_norm > 0 and g_norm > 0):
          trust_ratio = 1.0
        if self.trust_clip:
          trust_ratio = min(trust_ratio / self.lr, 1.0)
        grad = (grad + self.wd * p) * trust_ratio
      if self.momentum != 0:
        if i not in self.state:
          buf = self.state[i] = grad.copy()
        else:
          buf = self.state[i] = self.state[i] * self.momentum + grad * (1. - self.dampening)
        grad = grad + self.momentum * buf if self.nesterov else buf
      p -= self.lr * grad


class Lion:  # timm.optim.Lion
  def __init__(self, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, caution=False, maximize=False):
    self.lr, self.betas, self.wd, self.caution, self.maximize = lr, betas, weight_decay, caution, maximize
    self.state = {}

  def step(self, params, grads):
    beta1, beta2 = self.betas
    for i, (p, grad) in enumerate(zip(params, grads)):
      grad = -grad if self.maximize else grad
      exp_avg = self.state.setdefault(i, np.zeros_like(p))
      p *= 1 - self.lr * self.wd
      update = np.sign(exp_avg + (1 - beta1) * (grad - exp_avg))
      if self.caution:
        update = update * _caution_mask(update, grad)
      p -= self.lr * update
      self.state[i] = exp_avg + (1 - beta2) * (grad - exp_avg)


class AdaBelief:  # timm.optim.AdaBelief
  def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0, amsgrad=False,
               decoupled_decay=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True):
    self.lr, self.betas, self.eps, self.wd, self.amsgrad = lr, betas, eps, weight_decay, amsgrad
    self.decoupled, self.fixed, self.rectify, self.degenerated = (
        decoupled_decay, fixed_decay, rectify, degenerated_to_sgd)
    self.state = {}

  def step(self, params, grads):
    beta1, beta2 = self.betas
    for i, (p, grad) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(step=0, exp_avg=np.zeros_like(p), exp_avg_var=np.zeros_like(p),
                                        max_exp_avg_var=np.zeros_like(p)))
      s["step"] += 1
      step = s["step"]
      bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
      if self.rectify:
        beta2_t = beta2 ** step
        num_sma_max = 2 / (1 - beta2) - 1
        num_sma = num_sma_max - 2 * step * beta2_t / (1 - beta2_t)
        if num_sma >= 5:
          step_size = math.sqrt(
              (1 - beta2_t) * (num_sma - 4) / (num_sma_max - 4) * (num_sma - 2) / num_sma *
              num_sma_max / (num_sma_max - 2)) / (1 - beta1 ** step)
        elif self.degenerated:
          step_size = 1.0 / (1 - beta1 ** step)
        else:
          step_size = -1

      if self.decoupled:
        if not self.fixed:
          p *= 1.0 - self.lr * self.wd
        else:
          p *= 1.0 - self.wd
      elif self.wd != 0:
        grad = grad + self.wd * p

      s["exp_avg"] = s["exp_avg"] + (1 - beta1) * (grad - s["exp_avg"])
      exp_avg = s["exp_avg"]
      grad_residual = grad - exp_avg
      s["exp_avg_var"] = s["exp_avg_var"] * beta2 + grad_residual * grad_residual * (1 - beta2)
      s["exp_avg_var"] += self.eps  # in place in timm, in both branches
      if self.amsgrad:
        s["max_exp_avg_var"] = np.maximum(s["max_exp_avg_var"], s["exp_avg_var"])
        denom = np.sqrt(s["max_exp_avg_var"]) / math.sqrt(bias_correction2) + self.eps
      else:
        denom = np.sqrt(s["exp_avg_var"]) / math.sqrt(bias_correction2) + self.eps

      if not self.rectify:
        p -= self.lr / bias_correction1 * exp_avg / denom
      elif num_sma >= 5:
        denom = np.sqrt(s["exp_avg_var"]) + self.eps
        p -= step_size * self.lr * exp_avg / denom
      elif step_size > 0:
        p -= step_size * self.lr * exp_avg
