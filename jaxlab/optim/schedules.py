"""Learning-rate schedules by name, all with linear warmup from zero to the peak."""

from __future__ import annotations

import optax

_SCHEDULES = ("constant", "cosine", "linear")


def available_schedules() -> list[str]:
  return list(_SCHEDULES)


def make_schedule(name: str, *, peak: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
  if name not in _SCHEDULES:
    raise ValueError(f"unknown schedule '{name}'; valid: {', '.join(_SCHEDULES)}")
  warmup_steps = min(warmup_steps, total_steps)
  decay_steps = max(total_steps - warmup_steps, 1)
  if name == "constant":
    after = optax.constant_schedule(peak)
  elif name == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps)
  else:
    after = optax.linear_schedule(peak, 0.0, decay_steps)
  if warmup_steps == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup_steps), after], boundaries=[warmup_steps])
