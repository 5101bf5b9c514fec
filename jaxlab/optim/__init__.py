"""Optimizers, schedules and (later) parameter masks and weight averaging."""

from jaxlab.optim.registry import available, check_hparams, create, entry, register
from jaxlab.optim.schedules import available_schedules, make_schedule


def from_config(optim_config, total_steps: int):
  """The optimizer a training config asks for, and its schedule (logged as `lr`)."""
  import optax  # pylint: disable=import-outside-toplevel

  schedule = make_schedule(optim_config.schedule, peak=optim_config.lr, total_steps=total_steps,
                           warmup_steps=optim_config.warmup_steps)
  tx = create(optim_config.name, lr=schedule, **dict(optim_config.hparams))
  if optim_config.clip_grad_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.clip_grad_norm), tx)
  return tx, schedule
