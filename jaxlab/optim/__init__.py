"""Optimizers (PyTorch-exact, by name), schedules, weight-decay groups and weight averaging."""

from jaxlab.optim.averaging import averaged_params, ema, sema, swa
from jaxlab.optim.build import available_averaging, build, weight_decay_labels
from jaxlab.optim.registry import available, check_hparams, create, entry, register
from jaxlab.optim.schedules import available_schedules, make_schedule
