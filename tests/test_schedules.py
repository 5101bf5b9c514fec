"""Learning-rate schedules against closed forms, and epoch-based settings."""

import math

import numpy as np
import pytest

from jaxlab import optim
from jaxlab.config import base_config
from jaxlab.optim.build import schedule_from_config


@pytest.mark.parametrize("name, expected", [
    ("constant", lambda t: 1.0),
    ("cosine", lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 90))),
    ("linear", lambda t: 1.0 - 0.9 * t / 90),
    ("polynomial", lambda t: 0.1 + 0.9 * (1 - t / 90) ** 2),
])
def test_decay_after_linear_warmup(name, expected):
  schedule = optim.make_schedule(name, peak=1.0, total_steps=100, warmup_steps=10, end_value=0.1, power=2.0)
  for step in range(10):
    np.testing.assert_allclose(schedule(step), step / 10, rtol=1e-6)
  for step in range(10, 101, 7):
    np.testing.assert_allclose(schedule(step), expected(step - 10), rtol=1e-5, atol=1e-7)


def test_step_schedule_is_multistep():
  schedule = optim.make_schedule("step", peak=1.0, total_steps=100, milestones=(30, 60), gamma=0.5)
  assert [float(schedule(t)) for t in (0, 29, 30, 59, 60, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_epochs_become_steps():
  config = base_config().optim
  config.schedule, config.lr, config.warmup_epochs, config.milestones_epochs = "step", 1.0, 1.0, (2.0,)
  schedule = schedule_from_config(config, total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose([schedule(5), schedule(10), schedule(19), schedule(20)], [0.5, 1.0, 1.0, 0.1])


def test_unknown_schedule_is_one_line():
  with pytest.raises(ValueError, match="unknown schedule 'cosin'; valid: constant, cosine"):
    optim.make_schedule("cosin", peak=1.0, total_steps=10)
