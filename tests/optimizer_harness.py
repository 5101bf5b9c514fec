"""Shared by the optimizer tests: a registered optimizer as a jitted step on float32 params."""

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim import registry


def jitted_optimizer(name, hparams, params64):
  """(step, float32 params, state) with step(params, state, grads) -> (params, state)."""
  tx = registry.create(name, **hparams)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params64)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step, params, tx.init(params)
