"""One way to say each thing: steps or epochs (one form per quantity, the command line's wins over
the config file's), the warmup's starting learning rate, and the logged learning rate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlab import trainer
from jaxlab.config import ConfigError, load_config_file, prefer_command_line, validate
from jaxlab.optim.schedules import make_schedule


def test_a_command_line_form_replaces_the_config_files_other_form():
  config = load_config_file("configs/cifar100_modern.py")  # num_epochs and warmup_epochs
  assert config.num_epochs and config.optim.warmup_epochs
  config.total_steps, config.optim.warmup_steps = 100, 5  # what the flags below set
  prefer_command_line(config, ["--config.total_steps=100", "--config.optim.warmup_steps=5"])
  assert config.num_epochs is None and config.optim.warmup_epochs is None
  assert config.total_steps == 100 and config.optim.warmup_steps == 5


@pytest.mark.parametrize("steps, epochs, value", [
    ("total_steps", "num_epochs", (100, 2.0)),
    ("optim.warmup_steps", "optim.warmup_epochs", (10, 1.0)),
    ("optim.milestones", "optim.milestones_epochs", ((100,), (1.0,))),
])
def test_both_forms_set_by_the_user_is_one_line(steps, epochs, value):
  config = load_config_file("configs/quickstart.py")
  for key, v in zip((steps, epochs), value):
    node, _, leaf = key.rpartition(".")
    (config[node] if node else config)[leaf] = v
  flags = [f"--config.{steps}={value[0]}", f"--config.{epochs}={value[1]}"]
  prefer_command_line(config, flags)  # both given on the command line: neither is cleared
  with pytest.raises(ConfigError, match=rf"^config\.{steps}=.* and config\.{epochs}=.* are both set; "
                                        r"set one \(the other to None\)$"):
    validate(config, num_devices=8)


def test_warmup_starts_at_warmup_lr_as_timm_does():
  """timm/scheduler/cosine_lr.py, CosineLRScheduler._get_lr: during warmup
  lr(t) = warmup_lr_init + t · (lr − warmup_lr_init) / warmup_t, then the decay from lr."""
  schedule = make_schedule("cosine", peak=0.1, total_steps=100, warmup_steps=10, warmup_value=0.01)
  for t in (0, 3, 9):
    np.testing.assert_allclose(schedule(t), 0.01 + t * (0.1 - 0.01) / 10, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 0.1, rtol=1e-6)


def test_the_logged_lr_is_the_steps_not_the_windows_mean(tmp_path):
  config = load_config_file("configs/quickstart.py")
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 10
  config.log_every_steps = 5
  config.optim.warmup_steps, config.optim.warmup_lr, config.optim.lr = 10, 0.01, 0.1
  trainer.train_and_evaluate(config, tmp_path)
  logged = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if "lr" in r}
  # Step s updates with lr(s - 1): 0.01 + 4 · 0.009 at step 5 (the window's mean would be 0.028).
  assert logged.keys() == {5, 10}
  np.testing.assert_allclose(logged[5], 0.046, rtol=1e-5)
  np.testing.assert_allclose(logged[10], 0.01 + 9 * 0.009, rtol=1e-5)
