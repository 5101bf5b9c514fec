"""Learning-rate schedules by name, per step, all with linear warmup to the peak from zero (or
from `warmup_value`: timm's `warmup_lr`).

    constant     peak
    cosine       peak → end_value along half a cosine (timm/torch CosineAnnealingLR)
    linear       peak → end_value linearly
    polynomial   peak → end_value as (1 − progress)^power
    step         peak · gamma^(milestones passed)  (torch MultiStepLR)

Decay runs over the steps after warmup. Milestones count from step 0, warmup included.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import optax

_SCHEDULES = ("constant", "cosine", "linear", "polynomial", "step")


def available_schedules() -> list[str]:
  return list(_SCHEDULES)


def make_schedule(name: str, *, peak: float, total_steps: int, warmup_steps: int = 0,
                  end_value: float = 0.0, power: float = 1.0, milestones: Sequence[int] = (),
                  gamma: float = 0.1, warmup_value: float = 0.0) -> optax.Schedule:
  if name not in _SCHEDULES:
    raise ValueError(f"unknown schedule '{name}'; valid: {', '.join(_SCHEDULES)}")
  warmup_steps = min(warmup_steps, total_steps)
  decay_steps = max(total_steps - warmup_steps, 1)
  if name == "constant":
    after = optax.constant_schedule(peak)
  elif name == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end_value / peak if peak else 0.0)
  elif name in ("linear", "polynomial"):
    after = optax.polynomial_schedule(peak, end_value, power if name == "polynomial" else 1.0,
                                      decay_steps)
  else:
    bounds = jnp.asarray(sorted(milestones) or [total_steps + 1])
    shift = warmup_steps

    def after(count):
      return peak * gamma ** jnp.sum(count + shift >= bounds)

  if warmup_steps == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(warmup_value, peak, warmup_steps), after], boundaries=[warmup_steps])
