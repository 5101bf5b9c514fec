"""Inputs too small for a model: found when the run is built, not as a NaN loss after compiling.

A backbone that downsamples by 32 turns an 8x8 image into an empty (0-sized) feature map; the mean
over it is NaN, and training stops at step 1 after minutes of compilation. Tracing the task's
evaluation once on an abstract batch (no compilation, no arrays) counts the operations with an
empty result; when there are some, larger square sizes are traced to find the smallest from
which on there are none (or as few as at any size: a model may hold empty arrays by design, e.g.
zero register tokens; those stay at every size and are not blamed on the input).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

_LARGEST = 4096  # sides searched for the smallest size that fits


def _sub_jaxprs(value):
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def _empties(jaxpr) -> int:
  count = 0
  for eqn in jaxpr.eqns:
    count += any(0 in getattr(v.aval, "shape", ()) for v in eqn.outvars)
    count += sum(_empties(sub) for value in eqn.params.values() for sub in _sub_jaxprs(value))
  return count


def empty_results(forward: Callable, args: tuple, image_shape: tuple[int, ...]) -> int | None:
  """How many operations of `forward(*args, images)` on one image of `image_shape` (H, W, C)
  give an empty array (`args`: abstract arrays); None when it does not trace at that size."""
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  try:
    return _empties(jax.make_jaxpr(forward)(*args, images).jaxpr)
  except Exception:  # pylint: disable=broad-except  # e.g. a model built for one size only
    return None


def smallest_square(forward: Callable, args: tuple, image_shape: tuple[int, ...]) -> int | None:
  """None when `image_shape` is not too small; else the smallest square side from which on the
  count of empty results is as low as it gets (doubling from the side given, then bisecting)."""
  found = empty_results(forward, args, image_shape)
  if not found:
    return None
  side, channels = max(image_shape[:2]), image_shape[-1]
  counts = {}
  high = side * 2
  while high <= _LARGEST:
    counts[high] = empty_results(forward, args, (high, high, channels))
    if counts[high] == 0:
      break
    high *= 2
  floor = min((c for c in counts.values() if c is not None), default=None)
  if floor is None or floor >= found:
    return None  # no size does better: not the input's fault
  high = min(s for s, c in counts.items() if c == floor)
  low = max([side] + [s for s in counts if s < high])

  def fits(s):
    return empty_results(forward, args, (s, s, channels)) == floor

  while high - low > 1:
    mid = (low + high) // 2
    low, high = (low, mid) if fits(mid) else (mid, high)
  return high
