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
