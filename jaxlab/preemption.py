"""Preemption: SIGTERM (how TPU VMs and spot GPU hosts announce it) stops a run at a step boundary.

The trainer asks `should_stop(step)` after every step; when it says yes, the trainer saves a
checkpoint at that step and raises `Preempted`, and the CLI exits 0. The same command resumes.
"""

from __future__ import annotations

import pathlib
import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """SIGTERM arrived: the step in flight finished, was checkpointed, and the run stopped."""

  def __init__(self, step: int, directory: pathlib.Path):
    super().__init__(f"preempted: saved step {step} to {directory}; run the same command to resume")
    self.step = step


class PreemptionWatch:
  """Notices SIGTERM (how TPU VMs and spot GPU hosts announce preemption) at step boundaries.

  With several processes JAX's preemption sync decides, so that every host stops at the same step.
  """

  def __init__(self):
    self._requested = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._requested.set())

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
