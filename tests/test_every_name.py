"""Every advertised name works from a config: each optimizer in `jaxlab.optim.available()`, each
schedule and each averaging method trains a few steps of the quick-start config with its default
hyperparameters (and a warmup), writes a checkpoint, and that checkpoint restores.
(Every model in `jaxlab.models.available()` is built and run abstractly in test_models.py.)
"""

from __future__ import annotations

import itertools

import jax
import ml_collections
import numpy as np
import pytest

from jaxlab import optim, trainer
from jaxlab.config import load_config_file, validate
from jaxlab.restore import restore_run

STEPS = 3


def _run(tmp_path, **optim_keys):
  config = load_config_file("configs/quickstart.py")
  # A small model compiles fast; its 1-D and 2-D parameters exercise both weight-decay groups.
  config.model = ml_collections.ConfigDict({"name": "tiny_mixer", "dim": 8, "depth": 1})
  config.batch_size = 32
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = STEPS
  config.log_every_steps = 1
  config.optim.warmup_steps = 1  # a warmup from lr 0, as most recipes have
  config.optim.hparams = {}
  for key, value in optim_keys.items():
    config.optim[key] = value
  validate(config, jax.device_count())
  # One device: the programs compile faster than for the 8 simulated ones (sharding is tested
  # elsewhere). A non-finite update raises.
  metrics = trainer.train_and_evaluate(config, tmp_path, devices=jax.devices()[:1])
  assert np.isfinite(metrics["eval/loss"]), metrics
  run = restore_run(tmp_path)
  assert run.step == STEPS
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(run.params))
  return metrics


@pytest.mark.parametrize("name", optim.available())
def test_every_optimizer_trains_checkpoints_and_restores(name, tmp_path):
  _run(tmp_path, name=name)


# Schedules and averaging methods are independent of each other: pair them up, one run each.
PAIRS = list(itertools.zip_longest(optim.available_schedules(), optim.available_averaging(),
                                   fillvalue=None))


@pytest.mark.parametrize("schedule, averaging", PAIRS)
def test_every_schedule_and_averaging_method(schedule, averaging, tmp_path):
  keys = {"name": "adamw", "lr": 1e-3}
  if schedule is not None:
    keys["schedule"] = schedule
  if averaging is not None:
    keys["averaging"] = {"name": averaging, "hparams": {}, "average_model_state": True}
  metrics = _run(tmp_path, **keys)
  if averaging not in (None, "none"):
    assert np.isfinite(metrics["eval_ema/loss"])


def test_switching_optimizer_on_the_command_line_takes_one_try(capsys):
  """`--config.optim.name=lamb --config.optim.lr=2e-3 --config.optim.weight_decay=0.05` on a config
  written for SGD: SGD's momentum and nesterov are dropped with a note; a misspelt key is still
  an error; the top-level weight decay is the one used."""
  from jaxlab.config import ConfigError  # pylint: disable=import-outside-toplevel
  config = load_config_file("configs/quickstart.py")
  config.optim.name, config.optim.lr, config.optim.weight_decay = "lamb", 2e-3, 0.05
  validate(config, jax.device_count())
  assert "note: config.optim.hparams momentum, nesterov are not 'lamb' hyperparameters: dropped" \
      in capsys.readouterr().err
  assert config.optim.hparams.to_dict() == {"weight_decay": 0.05}
  # The library path (no validate) agrees: SGD's keys dropped, the top-level weight decay wins.
  raw = load_config_file("configs/quickstart.py")
  raw.optim.name, raw.optim.lr, raw.optim.weight_decay = "lamb", 2e-3, 0.05
  explicit = load_config_file("configs/quickstart.py")
  explicit.optim.name, explicit.optim.lr, explicit.optim.hparams = "lamb", 2e-3, {"weight_decay": 0.05}
  sgd = load_config_file("configs/quickstart.py")
  for c in (raw, explicit, sgd):
    c.optim.warmup_steps = 0  # a non-zero lr at the first update
  params = {"w": jax.numpy.ones((3, 2)), "b": jax.numpy.ones((2,))}
  grads = jax.tree.map(lambda p: 0.1 * p, params)
  tx_a, tx_b = (optim.build(c.optim, total_steps=10).tx for c in (raw, explicit))
  updates_a, _ = tx_a.update(grads, tx_a.init(params), params)
  updates_b, _ = tx_b.update(grads, tx_b.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, updates_a, updates_b)
  tx_c = optim.build(sgd.optim, total_steps=10).tx
  assert not np.array_equal(tx_c.update(grads, tx_c.init(params), params)[0]["w"], updates_a["w"])
  config.optim.hparams = {"momentun": 0.9}
  with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) momentun for optimizer 'lamb'"):
    validate(config, jax.device_count())
