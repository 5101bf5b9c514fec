"""The trainer in-process on 8 simulated devices: sharded parameters, optimizer state and averages."""

import chex
import jax
import numpy as np
import pytest

from jaxlab import optim, trainer
from jaxlab.config import ConfigError, load_config_file


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
  root = tmp_path / "checkpoints"  # created by the first save, if any
  saved = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.exists() else []
  assert all(s < bad_step for s in saved), (saved, bad_step)


def test_non_finite_skip_goes_on_and_counts(tmp_path, capsys):
  config = _diverging_config("skip")
  trainer.train_and_evaluate(config, tmp_path)
  from jaxlab.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from jaxlab.metrics.writers import read_jsonl  # pylint: disable=import-outside-toplevel
  skipped = sum(r.get("train/skipped", 0) for r in read_jsonl(tmp_path / "metrics.jsonl"))
  assert skipped > 0
  # The run says so at the end, with the same count.
  assert (f"warning: {int(skipped)} of 12 updates since step 0 were dropped for a non-finite loss"
          in capsys.readouterr().err)
  checkpointer = Checkpointer(tmp_path / "checkpoints", every_steps=1, keep=1)
  final = checkpointer.restore(12, trainer.build(config).abstract_state)
  checkpointer.close()
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(final.params))


def _random_batches(config, n, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.normal(size=(config.batch_size, 8, 8, 1)).astype(np.float32),
           "label": rng.integers(0, 10, config.batch_size).astype(np.int32)} for _ in range(n)]


def _sophia_hessian(opt_state):
  from jaxlab.optim.research_optimizers import SophiaState
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, SophiaState))
           if isinstance(s, SophiaState)]
  return [np.asarray(h) for s in found for h in jax.tree.leaves(s.hessian)]


def test_sophia_gets_a_hessian_estimate_every_k_steps():
  config = load_config_file("configs/quickstart.py")
  config.optim.name, config.optim.lr = "sophia", 1e-3
  config.optim.hparams = {"weight_decay": 0.1, "rho": 0.05, "hessian_every": 3}
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup)
  norms = []
  for batch in _random_batches(config, 7):
    state, metrics = train_step(state, trainer.to_global(batch, setup.batch_sharding))
    norms.append(sum(float(np.abs(h).sum()) for h in _sophia_hessian(state.opt_state)))
  # The reference refreshes after steps k-1, 2k-1, ...: here at the start of steps 3 and 6, each
  # refresh an EMA step h <- b2 h + (1 - b2) g^2; in between the estimate only stays.
  assert norms[0] == norms[1] == norms[2] == 0.0
  assert 0.0 < norms[3] == norms[4] == norms[5] != norms[6]
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_schedule_free_is_evaluated_at_its_average(tmp_path):
  config = load_config_file("configs/quickstart.py")
  config.optim.name, config.optim.lr, config.optim.schedule = "schedule_free_adamw", 5e-3, "constant"
  config.optim.hparams = {"weight_decay": 0.05, "betas": (0.8, 0.99)}  # two groups: decay / none
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  train_step, eval_step = trainer.compile_steps(setup)
  for batch in _random_batches(config, 4):
    state, _ = train_step(state, trainer.to_global(batch, setup.batch_sharding))
  x = optim.schedule_free_eval_params(state.params, state.opt_state)
  # Every parameter's x comes from the group that holds it: y + (1 - 1/b1)(z - y).
  from jaxlab.optim.recent_optimizers import ScheduleFreeAdamWState
  groups = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(s, ScheduleFreeAdamWState))
            if isinstance(s, ScheduleFreeAdamWState)]
  assert len(groups) == 2
  kernel_z = groups[0].z["head"]["kernel"]  # the "decay" group holds the kernels
  y = np.asarray(state.params["head"]["kernel"])
  np.testing.assert_allclose(x["head"]["kernel"], y + (1 - 1 / 0.8) * (np.asarray(kernel_z) - y), rtol=1e-5)
  metrics = trainer.evaluate_all(eval_step, state, config, setup.batch_sharding)
  at_x = trainer.evaluate(eval_step, state.replace(params=x), config, setup.batch_sharding)
  at_y = trainer.evaluate(eval_step, state, config, setup.batch_sharding)
  assert metrics["eval/loss"] == at_x["eval/loss"] != at_y["eval/loss"]


def test_lr_multiplier_zero_freezes_a_group_in_the_sharded_trainer():
  config = load_config_file("configs/quickstart.py")
  config.mesh.data, config.mesh.fsdp = 1, 8
  config.optim.lr_multipliers = (("^head/", 0.0),)
  config.optim.layer_decay = 0.5
  config.optim.layer_decay_layers = ("^conv1/", "^conv2/", "^conv3/")
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  before = jax.tree.map(np.asarray, state.params)
  train_step, _ = trainer.compile_steps(setup)
  for batch in _random_batches(config, 2):
    state, _ = train_step(state, trainer.to_global(batch, setup.batch_sharding))
  np.testing.assert_array_equal(state.params["head"]["kernel"], before["head"]["kernel"])
  assert not np.allclose(state.params["conv1"]["kernel"], before["conv1"]["kernel"])


def test_library_build_rejects_a_batch_the_mesh_cannot_split():
  # The CLI validates the whole config; trainer.build (the library path) checks batch sizes too.
  config = load_config_file("configs/quickstart.py")
  config.batch_size = 6
  with pytest.raises(ConfigError, match=r"^config.batch_size=6 must be divisible by "
                     r"mesh.data\*mesh.fsdp\*grad_accum_steps = 8\*1$"):
    trainer.build(config, jax.devices())
