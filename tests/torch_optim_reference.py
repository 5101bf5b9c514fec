"""NumPy (float64) transcriptions of torch.optim's SGD, Adam, AdamW, Adamax, NAdam, RAdam, Adagrad,
Adadelta and RMSprop `step()`.

Each class mirrors its torch 2.13 `_single_tensor_*` function line by line (maximize, foreach,
capturable, differentiable and fused left out): `step(params, grads)` updates a list of float64
arrays in place, with per-parameter state kept as torch keeps it. `lr` is an attribute, so a test
can change it between steps as a torch scheduler changes `group['lr']`. Used by
tests/test_optim_torch.py; cross-checked against torch 2.13.0 CPU (float64) when written.
"""

from __future__ import annotations

import numpy as np


class _Optimizer:
  def __init__(self, **hparams):
    self.__dict__.update(hparams)
    self.state: dict[int, dict] = {}

  def step(self, params, grads):
    for i, (p, g) in enumerate(zip(params, grads)):
      self._update(p, np.asarray(g, np.float64), self.state.setdefault(i, {}))

  def _update(self, p, grad, state):
    raise NotImplementedError


class SGD(_Optimizer):
  def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    super().__init__(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                     nesterov=nesterov)

  def _update(self, p, grad, state):
    if self.weight_decay != 0:
      grad = grad + self.weight_decay * p
    if self.momentum != 0:
      buf = state.get("momentum_buffer")
      if buf is None:
        buf = grad.copy()
        state["momentum_buffer"] = buf
      else:
        buf *= self.momentum
        buf += (1 - self.dampening) * grad
      grad = grad + self.momentum * buf if self.nesterov else buf
    p -= self.lr * grad


class Adam(_Optimizer):
  def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
               decoupled_weight_decay=False):
    super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                     decoupled_weight_decay=decoupled_weight_decay)

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
      if self.amsgrad:
        state["max_exp_avg_sq"] = np.zeros_like(p)
    beta1, beta2 = self.betas
    state["step"] += 1
    step = state["step"]
    if self.weight_decay != 0:
      if self.decoupled_weight_decay:
        p *= 1 - self.lr * self.weight_decay
      else:
        grad = grad + self.weight_decay * p
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg += (1 - beta1) * (grad - exp_avg)  # lerp_
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = self.lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    if self.amsgrad:
      np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
      denom = np.sqrt(state["max_exp_avg_sq"]) / bias_correction2_sqrt + self.eps
    else:
      denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + self.eps
    p -= step_size * exp_avg / denom


class AdamW(Adam):
  def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                     decoupled_weight_decay=True)


class Adamax(_Optimizer):
  def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, exp_avg=np.zeros_like(p), exp_inf=np.zeros_like(p))
    beta1, beta2 = self.betas
    state["step"] += 1
    if self.weight_decay != 0:
      grad = grad + self.weight_decay * p
    exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
    exp_avg += (1 - beta1) * (grad - exp_avg)
    np.maximum(exp_inf * beta2, np.abs(grad) + self.eps, out=exp_inf)
    bias_correction = 1 - beta1 ** state["step"]
    clr = self.lr / bias_correction
    p -= clr * exp_avg / exp_inf


class NAdam(_Optimizer):
  def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
               decoupled_weight_decay=False):
    super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                     momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay)

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, mu_product=1.0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
    beta1, beta2 = self.betas
    state["step"] += 1
    step = state["step"]
    bias_correction2 = 1 - beta2**step
    if self.weight_decay != 0:
      if self.decoupled_weight_decay:
        p *= 1 - self.lr * self.weight_decay
      else:
        grad = grad + self.weight_decay * p
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * self.momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * self.momentum_decay)))
    state["mu_product"] *= mu
    mu_product = state["mu_product"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    denom = np.sqrt(exp_avg_sq / bias_correction2) + self.eps
    mu_product_next = mu_product * mu_next
    p += (-self.lr * (1.0 - mu) / (1.0 - mu_product)) * grad / denom
    p += (-self.lr * mu_next / (1.0 - mu_product_next)) * exp_avg / denom


class RAdam(_Optimizer):
  def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
               decoupled_weight_decay=False):
    super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                     decoupled_weight_decay=decoupled_weight_decay)
    self.rectified: list[bool] = []  # per step (first parameter), for the tests

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
    beta1, beta2 = self.betas
    state["step"] += 1
    step = state["step"]
    if self.weight_decay != 0:
      if self.decoupled_weight_decay:
        p *= 1 - self.lr * self.weight_decay
      else:
        grad = grad + self.weight_decay * p
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    bias_corrected_exp_avg = exp_avg / bias_correction1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    if len(self.rectified) < step:
      self.rectified.append(rho_t > 5.0)
    if rho_t > 5.0:
      rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
      adaptive_lr = bias_correction2**0.5 / (np.sqrt(exp_avg_sq) + self.eps)
      p -= bias_corrected_exp_avg * self.lr * adaptive_lr * rect
    else:
      p -= bias_corrected_exp_avg * self.lr


class Adagrad(_Optimizer):
  def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
               eps=1e-10):
    super().__init__(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                     initial_accumulator_value=initial_accumulator_value, eps=eps)

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, sum=np.full_like(p, self.initial_accumulator_value))
    state["step"] += 1
    step = state["step"]
    if self.weight_decay != 0:
      grad = grad + self.weight_decay * p
    clr = self.lr / (1 + (step - 1) * self.lr_decay)
    state["sum"] += grad * grad
    std = np.sqrt(state["sum"]) + self.eps
    p -= clr * grad / std


class Adadelta(_Optimizer):
  def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    super().__init__(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, square_avg=np.zeros_like(p), acc_delta=np.zeros_like(p))
    state["step"] += 1
    if self.weight_decay != 0:
      grad = grad + self.weight_decay * p
    square_avg, acc_delta = state["square_avg"], state["acc_delta"]
    square_avg *= self.rho
    square_avg += (1 - self.rho) * grad * grad
    std = np.sqrt(square_avg + self.eps)
    delta = np.sqrt(acc_delta + self.eps) / std * grad
    acc_delta *= self.rho
    acc_delta += (1 - self.rho) * delta * delta
    p -= self.lr * delta


class RMSprop(_Optimizer):
  def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
               centered=False):
    super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                     centered=centered)

  def _update(self, p, grad, state):
    if not state:
      state.update(step=0, square_avg=np.zeros_like(p))
      if self.momentum > 0:
        state["momentum_buffer"] = np.zeros_like(p)
      if self.centered:
        state["grad_avg"] = np.zeros_like(p)
    state["step"] += 1
    if self.weight_decay != 0:
      grad = grad + self.weight_decay * p
    square_avg = state["square_avg"]
    square_avg *= self.alpha
    square_avg += (1 - self.alpha) * grad * grad
    if self.centered:
      grad_avg = state["grad_avg"]
      grad_avg += (1 - self.alpha) * (grad - grad_avg)
      avg = np.sqrt(square_avg - grad_avg * grad_avg)
    else:
      avg = np.sqrt(square_avg)
    avg = avg + self.eps
    if self.momentum > 0:
      buf = state["momentum_buffer"]
      buf *= self.momentum
      buf += grad / avg
      p -= self.lr * buf
    else:
      p -= self.lr * grad / avg
