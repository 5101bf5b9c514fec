"""The pure train/eval steps: jit and no-jit agree, accumulation, precision, clipping, randomness."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxlab import models, optim, steps
from jaxlab.optim import Optimizer
from jaxlab.state import ModelGraph, TrainState
from jaxlab.tasks.classification import Classification


class TinyMLP(nnx.Module):
  """No batch statistics, so microbatched gradients must equal full-batch ones."""

  def __init__(self, rngs, dropout=0.0):
    self.hidden = nnx.Linear(64, 32, rngs=rngs)
    self.head = nnx.Linear(32, 10, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    return self.head(self.dropout(nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))))


def _setup(module, tx=None):
  tx = tx or optax.sgd(0.1, momentum=0.9)
  graph = ModelGraph.of(module)
  params, model_state = ModelGraph.state_of(module)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                     opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
  return graph, tx, state


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
          "label": rng.integers(0, 10, size=(n,)).astype(np.int32),
          "mask": np.ones((n,), np.float32)}


class JitVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_train_step_decreases_loss_and_updates_batch_stats(self):
    module = models.create("small_cnn", num_classes=10, rngs=nnx.Rngs(0))
    graph, tx, state = _setup(module)
    step = self.variant(
        steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1))))
    batch, losses = _batch(), []
    before = jax.tree.map(np.asarray, state.model_state)
    for _ in range(5):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    assert int(state.step) == 5
    assert losses[-1] < losses[0]
    chex.assert_trees_all_equal_structs(before, state.model_state)
    # Batch statistics are carried out of the step, not lost.
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.model_state)))
    self.assertEqual(set(metrics), {"loss", "accuracy", "grad_norm", "lr", "skipped"})


def test_jit_and_no_jit_give_the_same_state():
  module = models.create("small_cnn", num_classes=10, rngs=nnx.Rngs(0))
  graph, tx, state = _setup(module)
  step = steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1)))
  eager, _ = step(state, _batch())
  jitted, _ = jax.jit(step)(state, _batch())
  chex.assert_trees_all_close(eager.params, jitted.params, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_equals_full_batch():
  graph, tx, state = _setup(TinyMLP(nnx.Rngs(1)))
  full = jax.jit(steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1))))
  accum = jax.jit(steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1)),
                                        grad_accum_steps=4))
  s1, m1 = full(state, _batch(32))
  s4, m4 = accum(state, _batch(32))
  chex.assert_trees_all_close(s1.params, s4.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  module = models.create("small_cnn", num_classes=10, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  graph, tx, state = _setup(module)
  step = jax.jit(steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1))))
  state, metrics = step(state, _batch())
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert np.isfinite(metrics["loss"])


def test_clipping_bounds_the_update():
  tx = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
  graph, tx, state = _setup(TinyMLP(nnx.Rngs(1)), tx)
  new, metrics = jax.jit(steps.make_train_step(Classification(), graph,
                                              Optimizer(tx, optax.constant_schedule(1.0))))(
      state, _batch())
  update = optax.tree.norm(jax.tree.map(jnp.subtract, new.params, state.params))
  assert float(metrics["grad_norm"]) > 1e-2  # the raw gradient is much larger than the clip
  np.testing.assert_allclose(update, 1e-3, rtol=1e-4)


def test_dropout_draws_from_step_rng():
  graph, tx, state = _setup(TinyMLP(nnx.Rngs(1), dropout=0.5))
  step = jax.jit(steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1))))
  a, _ = step(state, _batch())
  b, _ = step(state, _batch())
  chex.assert_trees_all_equal(a.params, b.params)  # same state, same step: same mask
  c, _ = step(state.replace(step=jnp.ones((), jnp.int32)), _batch())
  assert not np.allclose(a.params["hidden"]["kernel"], c.params["hidden"]["kernel"])  # next step: new mask
  d, _ = step(state.replace(rng=jax.random.PRNGKey(1)), _batch())
  assert not np.allclose(a.params["hidden"]["kernel"], d.params["hidden"]["kernel"])  # other seed


def test_eval_step_sums_only_real_examples():
  module = models.create("small_cnn", num_classes=10, rngs=nnx.Rngs(0))
  graph, _, state = _setup(module)
  eval_step = jax.jit(steps.make_eval_step(Classification(), graph))
  batch = _batch(8)
  full = eval_step(state, batch)
  batch["mask"][4:] = 0.0
  half = eval_step(state, batch)
  assert float(full["count"]) == 8 and float(half["count"]) == 4
  first_half = eval_step(state, {k: v[:4] for k, v in _batch(8).items()})
  np.testing.assert_allclose(half["loss"], first_half["loss"], rtol=1e-5)
  np.testing.assert_allclose(half["accuracy"], first_half["accuracy"])


def test_non_finite_update_is_dropped_and_counted():
  graph, tx, state = _setup(TinyMLP(nnx.Rngs(1)))
  step = jax.jit(steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(0.1))))
  good, metrics = step(state, _batch())
  assert float(metrics["skipped"]) == 0.0
  bad_batch = _batch()
  bad_batch["image"][0, 0, 0, 0] = np.nan
  after, metrics = step(good, bad_batch)
  assert float(metrics["skipped"]) == 1.0 and int(after.step) == 2
  chex.assert_trees_all_equal(after.params, good.params)
  chex.assert_trees_all_equal(after.opt_state, good.opt_state)


def test_sam_step_uses_the_gradient_at_the_perturbed_point():
  from jaxlab.optim.recent_optimizers import sam_perturbation  # pylint: disable=import-outside-toplevel
  graph, tx, state = _setup(TinyMLP(nnx.Rngs(1)), optax.sgd(1.0))
  batch = _batch()
  plain_step = jax.jit(
      steps.make_train_step(Classification(), graph, Optimizer(tx, optax.constant_schedule(1.0))))
  sam_needs = optim.entry("sam").needs({"rho": 0.05})  # the registry entry carries SAM's step
  sam_step = jax.jit(steps.make_train_step(Classification(), graph,
                                           Optimizer(tx, optax.constant_schedule(1.0), sam_needs)))
  plain, _ = plain_step(state, batch)
  grads = jax.tree.map(jnp.subtract, state.params, plain.params)  # sgd(1.0): the update is -grad
  perturbed = jax.tree.map(jnp.add, state.params, sam_perturbation(grads, state.params, 0.05))
  expected, _ = plain_step(state.replace(params=perturbed), batch)  # gradient at w + e_w ...
  expected_grads = jax.tree.map(jnp.subtract, perturbed, expected.params)
  new, metrics = sam_step(state, batch)
  chex.assert_trees_all_close(jax.tree.map(jnp.subtract, state.params, new.params), expected_grads,
                              rtol=1e-5, atol=1e-6)  # ... applied at w
  np.testing.assert_allclose(metrics["loss"], plain_step(state, batch)[1]["loss"], rtol=1e-6)
