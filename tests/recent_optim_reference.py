"""NumPy (float64) transcriptions of the reference `step()`s of the recent optimizers.

Each class mirrors its PyTorch class line by line: `step(params, grads)` updates a list of float64
arrays in place, with per-parameter state as the reference keeps it; `lr` is group['lr'] (a test
may set it between steps, as a torch scheduler does). Used by tests/test_optim_recent.py;
cross-checked when written against schedulefree 1.4.1 (AdamWScheduleFree), prodigyopt 1.1.2
(Prodigy) and the authors' SOAP soap.py, on torch 2.13 CPU.
"""

from __future__ import annotations

import math

import numpy as np


class AdamWScheduleFree:  # schedulefree.AdamWScheduleFree, in train mode
  def __init__(self, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0,
               r=0.0, weight_lr_power=2.0):
    self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
    self.warmup_steps, self.r, self.weight_lr_power = warmup_steps, r, weight_lr_power
    self.k, self.weight_sum, self.lr_max, self.state = 0, 0.0, -1.0, {}

  def step(self, params, grads):
    beta1, beta2 = self.betas
    k = self.k
    sched = (k + 1) / self.warmup_steps if k < self.warmup_steps else 1.0
    bias_correction2 = 1 - beta2 ** (k + 1)
    lr = self.lr * sched
    self.lr_max = lr_max = max(lr, self.lr_max)
    weight = ((k + 1) ** self.r) * (lr_max ** self.weight_lr_power)
    self.weight_sum += weight
    ckp1 = weight / self.weight_sum if self.weight_sum != 0 else 0
    for i, (y, g) in enumerate(zip(params, grads)):
      s = self.state.setdefault(i, dict(z=y.copy(), v=np.zeros_like(y)))
      s["v"] = s["v"] * beta2 + (1 - beta2) * g * g
      denom = np.sqrt(s["v"] / bias_correction2) + self.eps
      gn = g / denom
      if self.wd != 0:
        gn = gn + self.wd * y
      y += ckp1 * (s["z"] - y)
      y += lr * (beta1 * (1 - ckp1) - 1) * gn
      s["z"] -= lr * gn
    self.k = k + 1

  def eval_params(self, params):
    beta1 = self.betas[0]
    return [y + (1 - 1 / beta1) * (self.state[i]["z"] - y) for i, y in enumerate(params)]


class Prodigy:  # prodigyopt.Prodigy, one param group, slice_p=1
  def __init__(self, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0,
               decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6,
               d_coef=1.0, growth_rate=float("inf")):
    self.lr, self.betas, self.beta3, self.eps, self.wd = lr, betas, beta3, eps, weight_decay
    self.decouple, self.use_bias_correction = decouple, use_bias_correction
    self.safeguard_warmup, self.d0, self.d_coef, self.growth_rate = (
        safeguard_warmup, d0, d_coef, growth_rate)
    self.d = self.d_max = d0
    self.d_numerator, self.k, self.state = 0.0, 0, {}

  def step(self, params, grads):
    beta1, beta2 = self.betas
    beta3 = math.sqrt(beta2) if self.beta3 is None else self.beta3
    k, d, d0, lr = self.k, self.d, self.d0, self.lr
    bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1)) \
        if self.use_bias_correction else 1
    dlr = d * lr * bias_correction
    d_numerator = self.d_numerator * beta3
    delta_numerator, d_denom = 0.0, 0.0
    grads = [g.copy() for g in grads]
    for i, (p, g) in enumerate(zip(params, grads)):
      if self.wd != 0 and not self.decouple:
        g += self.wd * p
      s = self.state.setdefault(i, dict(s=np.zeros_like(p), p0=p.copy(), m=np.zeros_like(p),
                                        v=np.zeros_like(p)))
      if lr > 0.0:
        delta_numerator += (d / d0) * dlr * float(np.dot(g.ravel(), (s["p0"] - p).ravel()))
        if beta1 > 0:
          s["m"] = s["m"] * beta1 + d * (1 - beta1) * g
        s["v"] = s["v"] * beta2 + d * d * (1 - beta2) * g * g
        rate = (d / d0) * d if self.safeguard_warmup else (d / d0) * dlr
        s["s"] = s["s"] * beta3 + rate * g
        d_denom += np.abs(s["s"]).sum()
    if d_denom == 0:
      return
    d_numerator = d_numerator + delta_numerator
    d_hat = self.d_coef * d_numerator / d_denom
    if d == d0:
      d = max(d, d_hat)
    self.d_max = d_max = max(self.d_max, d_hat)
    d = min(d_max, d * self.growth_rate)
    self.d_numerator, self.d = d_numerator, d
    for i, (p, g) in enumerate(zip(params, grads)):
      s = self.state[i]
      denom = np.sqrt(s["v"]) + d * self.eps
      if self.wd != 0 and self.decouple:
        p -= self.wd * dlr * p
      if beta1 > 0:
        p -= dlr * s["m"] / denom
      else:
        p -= dlr * d * g / denom
    self.k = k + 1


class SOAP:  # nikhilvyas/SOAP soap.py, merge_dims=False
  def __init__(self, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
               precondition_frequency=10, max_precond_dim=10000, precondition_1d=False,
               normalize_grads=False, correct_bias=True):
    self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
    self.shampoo_beta = shampoo_beta if shampoo_beta >= 0 else betas[1]
    self.freq, self.max_dim, self.precondition_1d = (
        precondition_frequency, max_precond_dim, precondition_1d)
    self.normalize_grads, self.correct_bias, self.state = normalize_grads, correct_bias, {}

  @staticmethod
  def project(g, qs, back=False):
    for q in qs:  # tensordot on axis 0 appends the new axis last: a full cycle restores order
      if q is not None:
        g = np.tensordot(g, q, axes=([0], [1 if back else 0]))
      else:
        g = np.moveaxis(g, 0, -1)
    return g

  def update_preconditioner(self, g, s):
    if s["Q"] is not None:
      s["m"] = self.project(s["m"], s["Q"], back=True)
    for k, gg in enumerate(s["GG"]):
      if gg is not None:
        others = [j for j in range(g.ndim) if j != k]
        outer = np.tensordot(g, g, axes=(others, others))
        s["GG"][k] = gg + (1 - self.shampoo_beta) * (outer - gg)
    if s["Q"] is None:
      s["Q"] = [None if m is None else np.flip(np.linalg.eigh(m + 1e-30 * np.eye(len(m)))[1], 1)
                for m in s["GG"]]
    if s["step"] > 0 and s["step"] % self.freq == 0:
      qs, v = [], s["v"]
      for k, (m, o) in enumerate(zip(s["GG"], s["Q"])):
        if m is None:
          qs.append(None)
          continue
        est_eig = np.diag(o.T @ m @ o)
        idx = np.argsort(-est_eig, kind="stable")
        v = np.take(v, idx, axis=k)
        qs.append(np.linalg.qr(m @ o[:, idx])[0])
      s["Q"], s["v"] = qs, v
    if s["step"] > 0:
      s["m"] = self.project(s["m"], s["Q"])

  def step(self, params, grads):
    beta1, beta2 = self.betas
    for i, (p, g) in enumerate(zip(params, grads)):
      s = self.state.get(i)
      if s is None:
        if p.ndim == 1:
          on = [self.precondition_1d and p.shape[0] <= self.max_dim]
        else:
          on = [n <= self.max_dim for n in p.shape]
        s = self.state[i] = dict(step=0, m=np.zeros_like(p), v=np.zeros_like(p), Q=None,
                                 GG=[np.zeros((n, n)) if o else None for n, o in zip(p.shape, on)])
        self.update_preconditioner(g, s)
        continue
      g_rot = self.project(g, s["Q"])
      s["step"] += 1
      s["m"] = s["m"] * beta1 + (1 - beta1) * g_rot
      s["v"] = s["v"] * beta2 + (1 - beta2) * g_rot ** 2
      denom = np.sqrt(s["v"]) + self.eps
      step_size = self.lr
      if self.correct_bias:
        step_size = step_size * (1 - beta2 ** s["step"]) ** 0.5 / (1 - beta1 ** s["step"])
      norm_grad = self.project(s["m"] / denom, s["Q"], back=True)
      if self.normalize_grads:
        norm_grad = norm_grad / (1e-30 + np.mean(norm_grad ** 2) ** 0.5)
      p -= step_size * norm_grad
      if self.wd > 0:
        p -= self.lr * self.wd * p
      self.update_preconditioner(g, s)


def sam_perturbation(grads, params, rho, adaptive):
  """davda54/sam SAM.first_step's e_w (and _grad_norm), per parameter list."""
  norm = np.linalg.norm([np.linalg.norm(((np.abs(p) if adaptive else 1.0) * g).ravel())
                         for p, g in zip(params, grads)])
  scale = rho / (norm + 1e-12)
  return [((p ** 2) if adaptive else 1.0) * g * scale for p, g in zip(params, grads)]
