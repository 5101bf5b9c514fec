"""The learning rate an optimizer sees at a step, whether it was given as a number or a schedule.

PyTorch optimizers use the current lr inside their update (decoupled weight decay `p -= lr*wd*p`,
trust ratios, Adafactor's relative step...), so jaxlab's transcriptions need the value, not just a
final `scale_by_learning_rate`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def lr_at(lr: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """`lr(count)` for a schedule, `lr` for a number; `count` = updates applied so far (from 0)."""
  return jnp.asarray(lr(count) if callable(lr) else lr, jnp.float32)
