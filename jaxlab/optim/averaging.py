"""Weight averaging as optax transforms chained after any optimizer: `ema`, `sema`, `swa`, `lookahead`.

    tx = optax.chain(create("adamw", lr=1e-3), sema(momentum=0.999, switch_every=steps_per_epoch))

Each keeps an average of the parameters *after* the inner optimizer's update (`params + updates`)
in its state, where `averaged_params(opt_state)` finds it. Switch EMA (SEMA, Li et al. 2024,
arXiv 2402.09240) additionally sets the model's parameters to the EMA every `switch_every` steps
(in the paper: at the end of every epoch); the inner optimizer's state is left as it is and the EMA
goes on from where it was.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class AveragingState(NamedTuple):
  count: jax.Array  # updates seen
  averaged_params: optax.Params  # shaped like the params (sharded like them too)
  # How the last update moved the average, so that the train step can average non-parameter
  # model state (batch statistics) the same way: average += weight * (value - average), and
  # whether the params were switched to the average.
  last_weight: jax.Array
  switched: jax.Array


def average_like_params(opt_state: Any, average: Any, value: Any) -> tuple[Any, Any]:
  """(new average, new value) of other model state, following the params' last averaging step.

  Batch statistics belong to the weights they were computed with: an EMA of the weights is
  evaluated with an EMA of the statistics, and SEMA switches both.
  """
  state = _find(opt_state)
  new_average = jax.tree.map(lambda a, v: (a + state.last_weight * (v - a)).astype(a.dtype), average, value)
  new_value = jax.tree.map(lambda a, v: jnp.where(state.switched, a, v), new_average, value)
  return new_average, new_value


def _ema_momentum(momentum: float, warmup_steps: int, count: jax.Array) -> jax.Array:
  """`momentum`, ramped linearly from 0 over the first `warmup_steps` updates if asked."""
  if warmup_steps <= 0:
    return jnp.asarray(momentum, jnp.float32)
  return momentum * jnp.minimum(1.0, (count + 1) / warmup_steps).astype(jnp.float32)


def _init(params) -> AveragingState:
  return AveragingState(count=jnp.zeros((), jnp.int32), averaged_params=jax.tree.map(jnp.array, params),
                        last_weight=jnp.zeros((), jnp.float32), switched=jnp.zeros((), bool))


def _ema_transform(momentum: float, warmup_steps: int, switch_every: int | None) -> optax.GradientTransformation:

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("weight averaging needs the params: call tx.update(grads, state, params)")
    new_params = optax.apply_updates(params, updates)
    m = _ema_momentum(momentum, warmup_steps, state.count)
    average = jax.tree.map(lambda a, p: (m * a + (1.0 - m) * p).astype(a.dtype),
                           state.averaged_params, new_params)
    count = state.count + 1
    switch = jnp.zeros((), bool)
    if switch_every:
      switch = count % switch_every == 0
      # At a switch the update moves the params onto the EMA instead of to `new_params`.
      updates = jax.tree.map(lambda u, a, p: jnp.where(switch, (a - p).astype(u.dtype), u),
                             updates, average, params)
    return updates, AveragingState(count, average, 1.0 - m, switch)

  return optax.GradientTransformation(_init, update)


def ema(momentum: float = 0.9999, warmup_steps: int = 0) -> optax.GradientTransformation:
  """Exponential moving average of the parameters: `ema ← m·ema + (1−m)·params` after each update."""
  return _ema_transform(momentum, warmup_steps, switch_every=None)


def sema(momentum: float = 0.999, switch_every: int = 1000, warmup_steps: int = 0) -> optax.GradientTransformation:
  """Switch EMA: an EMA as in `ema`, and every `switch_every` updates the params become the EMA."""
  if switch_every <= 0:
    raise ValueError(f"sema switch_every must be a positive number of steps, got {switch_every}")
  return _ema_transform(momentum, warmup_steps, switch_every)


def swa(start_step: int = 0, every: int = 1) -> optax.GradientTransformation:
  """Stochastic weight averaging: the plain mean of the params after updates start_step+every, ...

  (Izmailov et al. 2018, as torch.optim.swa_utils.AveragedModel with the default average.)
  """

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("weight averaging needs the params: call tx.update(grads, state, params)")
    new_params = optax.apply_updates(params, updates)
    count = state.count + 1
    taken = jnp.maximum((count - start_step) // every, 0)  # snapshots averaged so far, this one included
    take = (count > start_step) & ((count - start_step) % every == 0)
    weight = jnp.where(take, 1.0 / jnp.maximum(taken, 1), 0.0)
    average = jax.tree.map(lambda a, p: (a + weight * (p - a)).astype(a.dtype),
                           state.averaged_params, new_params)
    return updates, AveragingState(count, average, weight.astype(jnp.float32), jnp.zeros((), bool))

  return optax.GradientTransformation(_init, update)


def lookahead(sync_period: int = 6, slow_step_size: float = 0.5) -> optax.GradientTransformation:
  """Lookahead (Zhang et al. 2019) with optax.lookahead's update, as an averaging transform.

  Slow weights live in the state (`averaged_params`); every `sync_period` updates they move
  `slow_step_size` of the way to the fast weights, and the fast weights (the model's params) are
  reset to them. optax.lookahead computes the same but wants `LookaheadParams` (fast and slow) in
  place of the params; kept here in the optimizer state, the params stay the model's own pytree,
  and evaluation, checkpoints and sharding need no special case. Evaluate the slow weights
  (`eval_ema/*`), as the paper does.
  """
  if sync_period <= 0:
    raise ValueError(f"lookahead sync_period must be a positive number of steps, got {sync_period}")
  if not 0.0 <= slow_step_size <= 1.0:
    raise ValueError(f"lookahead slow_step_size must be in [0, 1], got {slow_step_size}")

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("weight averaging needs the params: call tx.update(grads, state, params)")
    new_params = optax.apply_updates(params, updates)
    count = state.count + 1
    sync = count % sync_period == 0
    weight = jnp.where(sync, slow_step_size, 0.0).astype(jnp.float32)
    slow = jax.tree.map(lambda s, p: (s + weight * (p - s)).astype(s.dtype), state.averaged_params, new_params)
    updates = jax.tree.map(lambda u, s, p: jnp.where(sync, (s - p).astype(u.dtype), u), updates, slow, params)
    return updates, AveragingState(count, slow, weight, sync)

  return optax.GradientTransformation(_init, update)


def _find(opt_state: Any) -> AveragingState | None:
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, AveragingState))
           if isinstance(s, AveragingState)]
  if len(found) > 1:
    raise ValueError(f"the optimizer state holds {len(found)} weight averages; expected one")
  return found[0] if found else None


def averaged_params(opt_state: Any) -> optax.Params | None:
  """The averaged parameters kept by an `ema`/`sema`/`swa`/`lookahead` anywhere in an optimizer's state."""
  state = _find(opt_state)
  return None if state is None else state.averaged_params
