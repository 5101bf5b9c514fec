"""Builders of the pure step functions: `train_step(state, batch) -> (state, metrics)` and
`eval_step(state, batch) -> metric sums`. They close over static things only (task, graph,
optimizer); everything that changes is an argument, so `jax.jit` can shard and donate it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.averaging import average_like_params
from jaxlab.optim.build import Optimizer
from jaxlab.state import ModelGraph, TrainState, step_rng
from jaxlab.tasks.base import Batch, Task


def _grads_and_metrics(task: Task, graph: ModelGraph, optimizer: Optimizer, params, model_state,
                       batch, rng):
  """Gradients of the task loss for one (micro)batch, the metrics, and the updated model state.

  The optimizer may take its gradient its own way (SAM: at a perturbed point); metrics and batch
  statistics always come from the pass at `params`.
  """

  def loss_fn(params):
    model = graph.merge(params, model_state, train=True, rng=jax.random.fold_in(rng, 1))
    loss, metrics = task.loss(model, batch, jax.random.fold_in(rng, 0))
    return loss, (metrics, graph.state_of(model)[1])

  take_gradient = optimizer.needs.gradient or (lambda f, p: jax.value_and_grad(f, has_aux=True)(p))
  (_, (metrics, new_model_state)), grads = take_gradient(loss_fn, params)
  return grads, metrics, new_model_state


def _update_args(task: Task, graph: ModelGraph, optimizer: Optimizer, state: TrainState, batch,
                 rng) -> dict:
  """Extra arguments of the optimizer's update (SophiaG: gradients of the task's sampled loss)."""
  if optimizer.needs.update_args is None:
    return {}

  def sampled_grads():
    def loss_fn(params):
      model = graph.merge(params, state.model_state, train=True, rng=jax.random.fold_in(rng, 2))
      return task.sampled_loss(model, batch, jax.random.fold_in(rng, 3))
    return jax.grad(loss_fn)(state.params)

  return optimizer.needs.update_args(state.step, sampled_grads)


def make_train_step(task: Task, graph: ModelGraph, optimizer: Optimizer,
                    grad_accum_steps: int = 1) -> Callable:
  """One optimizer update over the global batch, split into `grad_accum_steps` microbatches.

  What the optimizer needs besides a gradient (`optimizer.needs`: SAM's perturbed gradient,
  SophiaG's Hessian estimate) is provided here, for every optimizer alike.
  """
  tx, schedule = optimizer.tx, optimizer.schedule

  def train_step(state: TrainState, batch: Batch):
    rng = step_rng(state)
    if grad_accum_steps == 1:
      grads, metrics, model_state = _grads_and_metrics(
          task, graph, optimizer, state.params, state.model_state, batch, rng)
    else:
      # Microbatch j takes rows j, j+k, j+2k, ...: every device keeps an equal share of each.
      micro = jax.tree.map(
          lambda x: x.reshape((x.shape[0] // grad_accum_steps, grad_accum_steps) + x.shape[1:])
          .swapaxes(0, 1), batch)

      def accumulate(carry, inputs):
        grad_sum, model_state = carry
        index, microbatch = inputs
        grads, metrics, model_state = _grads_and_metrics(
            task, graph, optimizer, state.params, model_state, microbatch,
            jax.random.fold_in(rng, index))
        return (jax.tree.map(jnp.add, grad_sum, grads), model_state), metrics

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grad_sum, model_state), metrics = jax.lax.scan(
          accumulate, (zeros, state.model_state), (jnp.arange(grad_accum_steps), micro))
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
      metrics = jax.tree.map(lambda m: m.mean(0), metrics)

    extra = _update_args(task, graph, optimizer, state, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    averaged_model_state = state.averaged_model_state
    if averaged_model_state is not None:  # follows the params' average (and SEMA's switch)
      averaged_model_state, model_state = average_like_params(opt_state, averaged_model_state, model_state)
    grad_norm = optax.tree.norm(grads)
    # A non-finite loss or gradient never reaches the state: that update is dropped (and counted;
    # the trainer stops or goes on, by config). The step counter still advances past the batch.
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    updated = (params, model_state, opt_state, averaged_model_state)
    kept = (state.params, state.model_state, state.opt_state, state.averaged_model_state)
    params, model_state, opt_state, averaged_model_state = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old), updated, kept)
    metrics = {**metrics, "grad_norm": grad_norm, "lr": schedule(state.step),
               "skipped": 1.0 - finite.astype(jnp.float32)}
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                              opt_state=opt_state, averaged_model_state=averaged_model_state)
    return new_state, metrics

  return train_step


def make_eval_step(task: Task, graph: ModelGraph) -> Callable:
  """Per-batch metric sums in eval mode (running statistics, no dropout)."""

  def eval_step(state: TrainState, batch: Batch):
    model = graph.merge(state.params, state.model_state, train=False)
    return task.evaluate(model, batch)

  return eval_step
