"""The trainer in-process on 8 simulated devices: sharded parameters, optimizer state and averages."""

import chex
import jax
import numpy as np

from jaxlab import optim, trainer
from jaxlab.config import load_config_file


def test_fsdp8_shards_parameters_and_optimizer_state():
  config = load_config_file("configs/quickstart.py")
  config.mesh.data, config.mesh.fsdp = 1, 8
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  sharded = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    if "fsdp" in str(leaf.sharding.spec):
      shard = leaf.addressable_shards[0].data
      assert shard.size * 8 == leaf.size, jax.tree_util.keystr(path)
      sharded[jax.tree_util.keystr(path)] = leaf
  # Every parameter above the size threshold is split 8 ways; small ones stay replicated.
  big = [l for l in jax.tree.leaves(state.params) if l.size >= config.sharding.fsdp_min_size]
  assert big and len(sharded) == len(big)
  momentum = jax.tree.leaves(state.opt_state)
  assert sum("fsdp" in str(m.sharding.spec) for m in momentum if hasattr(m, "sharding")) == len(big)
  # The sharded values are the same numbers as an unsharded initialisation.
  config.mesh.data, config.mesh.fsdp = 8, 1
  replicated = trainer.initial_state(trainer.build(config))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(replicated.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _sema_config():
  config = load_config_file("configs/quickstart.py")
  config.optim.averaging.name = "sema"
  config.optim.averaging.hparams = {"momentum": 0.9, "switch_every": 5}
  return config


def test_sema_average_is_sharded_like_params_under_fsdp8():
  config = _sema_config()
  config.mesh.data, config.mesh.fsdp = 1, 8
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  average = optim.averaged_params(state.opt_state)
  chex.assert_trees_all_equal(average, state.params)  # the EMA starts at the initial params
  for p, a in zip(jax.tree.leaves(state.params), jax.tree.leaves(average)):
    assert p.sharding == a.sharding


def test_training_with_sema_reports_both_evaluations(tmp_path):
  config = _sema_config()
  config.total_steps, config.eval_every_steps, config.log_every_steps = 12, 12, 4
  result = trainer.train_and_evaluate(config, tmp_path / "run")
  assert {"eval/accuracy", "eval_ema/accuracy", "eval/loss", "eval_ema/loss"} <= set(result)
  assert result["eval/accuracy"] != result["eval_ema/accuracy"] or result["eval/loss"] != result["eval_ema/loss"]


def test_sema_switches_batch_statistics_with_the_weights():
  config = _sema_config()
  config.mesh.data, config.optim.warmup_steps = 8, 0
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup)
  rng = np.random.default_rng(0)
  average = jax.tree.map(np.asarray, state.averaged_model_state)
  for step in range(1, 6):
    batch = {"image": rng.normal(size=(config.batch_size, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 10, config.batch_size).astype(np.int32)}
    state, _ = train_step(state, trainer.to_global(batch, setup.batch_sharding))
    if step < 5:  # EMA with momentum 0.9 of the statistics the step produced
      average = jax.tree.map(lambda a, v: 0.9 * a + 0.1 * np.asarray(v), average, state.model_state)
      chex.assert_trees_all_close(state.averaged_model_state, average, rtol=1e-5, atol=1e-6)
      assert not np.allclose(state.params["head"]["kernel"], optim.averaged_params(state.opt_state)["head"]["kernel"])
  # Step 5 switches: weights and their statistics both become the averages.
  # (The switch is an update a - p added to p: equal up to float32 rounding.)
  chex.assert_trees_all_close(state.params, optim.averaged_params(state.opt_state), rtol=1e-6, atol=1e-9)
  chex.assert_trees_all_equal(state.model_state, state.averaged_model_state)


def _diverging_config(mode):
  config = load_config_file("configs/quickstart.py")
  config.optim.lr, config.optim.warmup_steps, config.nonfinite = 1e12, 0, mode
  config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 12, 4, 2
  config.eval_every_steps = 12
  return config


def test_non_finite_stop_names_the_step_and_saves_nothing_after_it(tmp_path):
  import pytest  # pylint: disable=import-outside-toplevel
  with pytest.raises(trainer.NonFiniteError, match=r"non-finite loss or gradient at step (\d+)") as e:
    trainer.train_and_evaluate(_diverging_config("stop"), tmp_path)
  bad_step = int(str(e.value).split("at step ")[1].split(":")[0])
  saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert all(s < bad_step for s in saved), (saved, bad_step)


def test_non_finite_skip_goes_on_and_counts(tmp_path):
  config = _diverging_config("skip")
  trainer.train_and_evaluate(config, tmp_path)
  from jaxlab.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from jaxlab.metrics.writers import read_jsonl  # pylint: disable=import-outside-toplevel
  skipped = sum(r.get("train/skipped", 0) for r in read_jsonl(tmp_path / "metrics.jsonl"))
  assert skipped > 0
  checkpointer = Checkpointer(tmp_path / "checkpoints", every_steps=1, keep=1)
  final = checkpointer.restore(12, trainer.build(config).abstract_state)
  checkpointer.close()
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(final.params))
