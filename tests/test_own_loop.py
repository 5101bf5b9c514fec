"""examples/own_loop.py: jaxlab's model and optimizer in a hand-written jit loop with a BatchNorm
model, both ways it shows (pure-dict split/merge, and nnx.jit), and the mistake it explains."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import numpy as np
import optax
import pytest
from flax import errors, nnx

from jaxlab import models

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("own_loop", ROOT / "examples" / "own_loop.py")
own_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(own_loop)

STEPS = 8


def _batch_stats(module) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)))]


@pytest.fixture(scope="module")
def split_merge():
  return own_loop.split_merge_loop(steps=STEPS)


def test_split_merge_loop_trains_and_keeps_the_batch_statistics(split_merge):
  losses, trained = split_merge
  assert len(losses) == STEPS and all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses
  # The running averages the step returned were carried on: not the fresh model's any more.
  fresh = _batch_stats(models.create("small_cnn", num_classes=own_loop.NUM_CLASSES))
  moved = [not np.allclose(a, b) for a, b in zip(_batch_stats(trained), fresh)]
  assert len(moved) == 6 and all(moved)  # mean and var of the three BatchNorms


def test_nnx_jit_loop_is_the_same_computation(split_merge):
  losses, trained = own_loop.nnx_jit_loop(steps=STEPS)
  np.testing.assert_allclose(losses, split_merge[0], rtol=1e-4)
  for a, b in zip(_batch_stats(trained), _batch_stats(split_merge[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_merging_a_state_of_variables_inside_grad_is_the_error_the_example_explains():
  model = models.create("small_cnn", num_classes=own_loop.NUM_CLASSES)
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # State leaves: Variables
  images, labels = own_loop.random_batch(batch_size=4)

  @jax.jit
  def natural_step(params, rest):
    def loss_fn(params):
      module = nnx.merge(graphdef, params, rest)
      return optax.softmax_cross_entropy_with_integer_labels(module(images), labels).mean()
    return jax.grad(loss_fn)(params)

  with pytest.raises(errors.TraceContextError, match="Cannot mutate BatchStat from a different trace level"):
    natural_step(params, rest)
