"""NumPy (float64) transcriptions of the reference `step()`s of the research optimizers.

Each class mirrors its PyTorch class line by line: `step(params, grads)` updates a list of float64
arrays in place, with per-parameter state as the reference keeps it. Used by
tests/test_optim_research.py; cross-checked against timm 1.0.31 / adabound 0.0.5 / Sophia's
sophia.py on torch 2.13 CPU when written.
"""

from __future__ import annotations

import math

import numpy as np


def _caution(exp_avg, grad):
  mask = (exp_avg * grad > 0).astype(grad.dtype)
  return mask / max(mask.mean(), 1e-3)


class Adan:  # timm.optim.Adan
  def __init__(self, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
               caution=False):
    self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
    self.no_prox, self.caution, self.t, self.state = no_prox, caution, 0, {}

  def step(self, params, grads):
    b1, b2, b3 = self.betas
    self.t += 1
    bc1, bc2, bc3 = 1 - b1 ** self.t, 1 - b2 ** self.t, 1 - b3 ** self.t
    lr = self.lr
    for i, (p, g) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(m=np.zeros_like(p), n=np.zeros_like(p), d=np.zeros_like(p)))
      if self.t == 1:
        s["neg"] = -g.copy()
      neg = s["neg"] + g
      s["m"] += (1 - b1) * (g - s["m"])
      s["d"] = b2 * s["d"] + (1 - b2) * neg
      neg = neg * b2 + g
      s["n"] = b3 * s["n"] + (1 - b3) * neg * neg
      denom = np.sqrt(s["n"]) / math.sqrt(bc3) + self.eps
      m = s["m"] * _caution(s["m"], g) if self.caution else s["m"]
      if self.no_prox:
        p *= 1 - lr * self.wd
        p -= lr / bc1 * m / denom
        p -= lr * b2 / bc2 * s["d"] / denom
      else:
        p -= lr / bc1 * m / denom
        p -= lr * b2 / bc2 * s["d"] / denom
        p /= 1 + lr * self.wd
      s["neg"] = -g.copy()


class NvNovoGrad:  # timm.optim.NvNovoGrad
  def __init__(self, lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0.0, grad_averaging=False,
               amsgrad=False, decoupled_decay=False):
    self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
    self.grad_averaging, self.amsgrad, self.decoupled = grad_averaging, amsgrad, decoupled_decay
    self.state = {}

  def step(self, params, grads):
    b1, b2 = self.betas
    for i, (p, g) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(m=np.zeros_like(p), v=0.0, vmax=0.0))
      norm = np.sum(g ** 2)
      s["v"] = norm if s["v"] == 0 else b2 * s["v"] + (1 - b2) * norm
      if self.amsgrad:
        s["vmax"] = max(s["vmax"], s["v"])
        denom = math.sqrt(s["vmax"]) + self.eps
      else:
        denom = math.sqrt(s["v"]) + self.eps
      u = g / denom
      if self.wd != 0:
        if self.decoupled:
          p *= 1 - self.lr * self.wd
        else:
          u = u + self.wd * p
      if self.grad_averaging:
        u = u * (1 - b1)
      s["m"] = b1 * s["m"] + u
      p -= self.lr * s["m"]


class Adafactor:  # timm.optim.Adafactor
  def __init__(self, lr=None, eps=1e-30, eps_scale=1e-3, clip_threshold=1.0, decay_rate=-0.8,
               betas=None, weight_decay=0.0, scale_parameter=True, warmup_init=False,
               min_dim_size_to_factor=16, caution=False):
    self.lr, self.eps, self.eps_scale, self.clip = lr, eps, eps_scale, clip_threshold
    self.decay_rate, self.beta1 = decay_rate, None if betas is None else betas[0]
    self.wd, self.scale_parameter, self.warmup_init = weight_decay, scale_parameter, warmup_init
    self.min_size, self.caution, self.state = min_dim_size_to_factor, caution, {}

  def _factored(self, shape):
    n = len(shape)
    if n > 2 and shape[0] > self.min_size and shape[1] > self.min_size:
      return 0, 1
    if n >= 2 and shape[-2] > self.min_size and shape[-1] > self.min_size:
      return n - 2, n - 1
    return None

  @staticmethod
  def _rms(x):
    return np.linalg.norm(x.ravel()) / math.sqrt(x.size)

  def step(self, params, grads):
    for i, (p, g) in enumerate(zip(params, grads)):
      dims = self._factored(g.shape)
      if i not in self.state:
        s = self.state[i] = dict(step=0)
        if self.beta1 is not None:
          s["m"] = np.zeros_like(g)
        if dims is not None:
          s["row"] = np.zeros(np.delete(g.shape, dims[1]))
          s["col"] = np.zeros(np.delete(g.shape, dims[0]))
        else:
          s["v"] = np.zeros_like(g)
      s = self.state[i]
      s["step"] += 1
      rms = self._rms(p)
      if self.lr is None:
        min_step = 1e-6 * s["step"] if self.warmup_init else 1e-2
        lr_t = min(min_step, 1.0 / math.sqrt(s["step"]))
        if self.scale_parameter:
          lr_t *= max(self.eps_scale, rms)
      else:
        lr_t = self.lr
      beta2t = 1.0 - math.pow(s["step"], self.decay_rate)
      upd = g ** 2 + self.eps
      if dims is not None:
        dc, dr = dims
        s["row"] += (1 - beta2t) * (upd.mean(axis=dr) - s["row"])
        s["col"] += (1 - beta2t) * (upd.mean(axis=dc) - s["col"])
        r = np.expand_dims(1 / np.sqrt(s["row"] / s["row"].mean(axis=dc, keepdims=True)), dr)
        c = 1 / np.sqrt(np.expand_dims(s["col"], dc))
        upd = r * c * g
      else:
        s["v"] += (1 - beta2t) * (upd - s["v"])
        upd = g / np.sqrt(s["v"])
      upd = upd / max(self._rms(upd) / self.clip, 1.0)
      upd = upd * lr_t
      if self.beta1 is not None:
        s["m"] += (1 - self.beta1) * (upd - s["m"])
        upd = s["m"] * _caution(s["m"], g) if self.caution else s["m"]
      if self.wd != 0:
        p += -self.wd * lr_t * p
      p -= upd


class AdaBound:  # adabound.AdaBound
  def __init__(self, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8,
               weight_decay=0.0, amsbound=False):
    self.lr = self.base_lr = lr
    self.betas, self.final_lr, self.gamma, self.eps = betas, final_lr, gamma, eps
    self.wd, self.amsbound, self.state = weight_decay, amsbound, {}

  def step(self, params, grads):
    b1, b2 = self.betas
    for i, (p, g) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(t=0, m=np.zeros_like(p), v=np.zeros_like(p),
                                        vmax=np.zeros_like(p)))
      s["t"] += 1
      if self.wd != 0:
        g = g + self.wd * p
      s["m"] = b1 * s["m"] + (1 - b1) * g
      s["v"] = b2 * s["v"] + (1 - b2) * g * g
      if self.amsbound:
        s["vmax"] = np.maximum(s["vmax"], s["v"])
        denom = np.sqrt(s["vmax"]) + self.eps
      else:
        denom = np.sqrt(s["v"]) + self.eps
      step_size = self.lr * math.sqrt(1 - b2 ** s["t"]) / (1 - b1 ** s["t"])
      final_lr = self.final_lr * self.lr / self.base_lr
      lower = final_lr * (1 - 1 / (self.gamma * s["t"] + 1))
      upper = final_lr * (1 + 1 / (self.gamma * s["t"]))
      p -= np.clip(step_size / denom, lower, upper) * s["m"]


class SophiaG:  # Liuhong99/Sophia sophia.SophiaG
  def __init__(self, lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=1e-1, maximize=False):
    self.lr, self.betas, self.rho, self.wd, self.maximize = lr, betas, rho, weight_decay, maximize
    self.state = {}

  def _s(self, i, p):
    return self.state.setdefault(i, dict(m=np.zeros_like(p), h=np.zeros_like(p)))

  def update_hessian(self, params, hessian_grads):
    b2 = self.betas[1]
    for i, (p, hg) in enumerate(zip(params, hessian_grads)):
      s = self._s(i, p)
      s["h"] = b2 * s["h"] + (1 - b2) * hg * hg

  def step(self, params, grads, bs=5120):
    b1 = self.betas[0]
    for i, (p, g) in enumerate(zip(params, grads)):
      g = -g if self.maximize else g
      s = self._s(i, p)
      p *= 1 - self.lr * self.wd
      s["m"] = b1 * s["m"] + (1 - b1) * g
      ratio = np.minimum(np.abs(s["m"]) / (self.rho * bs * s["h"] + 1e-15), 1.0)
      p -= self.lr * np.sign(s["m"]) * ratio


class Adopt:  # timm.optim.Adopt
  def __init__(self, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_exp=0.333, weight_decay=0.0,
               decoupled=False, caution=False, maximize=False):
    self.lr, self.betas, self.eps, self.clip_exp, self.wd = lr, betas, eps, clip_exp, weight_decay
    self.decoupled, self.caution, self.maximize, self.t, self.state = (
        decoupled, caution, maximize, 0, {})

  def step(self, params, grads):
    b1, b2 = self.betas
    self.t += 1
    for i, (p, g) in enumerate(zip(params, grads)):
      g = -g if self.maximize else g
      s = self.state.setdefault(i, dict(m=np.zeros_like(p), v=np.zeros_like(p)))
      if self.wd != 0 and not self.decoupled:
        g = g + self.wd * p
      if self.t == 1:
        s["v"] += g * g
        continue
      if self.wd != 0 and self.decoupled:
        p += -self.lr * self.wd * p
      normed = g / np.maximum(np.sqrt(s["v"]), self.eps)
      if self.clip_exp is not None:
        c = (self.t - 1) ** self.clip_exp
        normed = np.clip(normed, -c, c)
      s["m"] += (1 - b1) * (normed - s["m"])
      m = s["m"] * _caution(s["m"], g) if self.caution else s["m"]
      p -= self.lr * m
      s["v"] = b2 * s["v"] + (1 - b2) * g * g
