"""Console progress: step rate, images/s and ETA on one tqdm bar (process 0 only)."""

from __future__ import annotations

import time

import jax
from tqdm.auto import tqdm


class Progress:

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int):
    self._batch_size = batch_size
    self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                     disable=jax.process_index() != 0, mininterval=1.0)
    self._last_time, self._last_step = time.perf_counter(), start_step

  def update(self, step: int, scalars: dict[str, float] | None = None) -> None:
    self._bar.update(step - self._bar.n)
    if scalars is None:
      return
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("train/loss", "eval/accuracy")}
    self._bar.set_postfix(img_s=f"{rate * self._batch_size:.0f}", **shown)

  def write(self, message: str) -> None:
    if not self._bar.disable:
      self._bar.write(message)

  def close(self) -> None:
    self._bar.close()
