"""The full optimizer of a training config: schedule, clipping, weight-decay groups, averaging.

    optimizer = jaxlab.optim.build(config.optim, total_steps=..., steps_per_epoch=...)
    optimizer.tx, optimizer.schedule, optimizer.needs, optimizer.average_model_state

One build serves the trainer, the study engine and restore/export: what an optimizer needs from
the step (`needs`, see registry.StepNeeds) comes from its registry entry, never from its name.

Order of the chain: clip the global gradient norm → the optimizer, split into a group with
weight decay and one without (biases, 1-D parameters and configured patterns, as timm's
`param_groups_weight_decay`) → per-group lr factors (`lr_multipliers`, `layer_decay`; see
param_groups.py) → weight averaging (`ema`/`sema`/`swa`/`lookahead`), which sees the final
parameters of every step.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import ml_collections
import optax

from jaxlab.optim import averaging
from jaxlab.optim.param_groups import param_path, scale_by_param_group
from jaxlab.optim.registry import NO_NEEDS, StepNeeds, create, entry, foreign_hparams
from jaxlab.optim.schedules import make_schedule

AVERAGING = {"ema": averaging.ema, "sema": averaging.sema, "swa": averaging.swa,
             "lookahead": averaging.lookahead}


def available_averaging() -> list[str]:
  return ["none", *sorted(AVERAGING)]


def weight_decay_labels(params, exclude_patterns=(), exclude_1d: bool = True):
  """'decay' or 'no_decay' for every parameter, by its '/'-joined path and its rank."""
  patterns = [re.compile(p) for p in exclude_patterns]

  def label(key_path, leaf):
    path = param_path(key_path)
    if (exclude_1d and len(leaf.shape) <= 1) or any(p.search(path) for p in patterns):
      return "no_decay"
    return "decay"

  return jax.tree_util.tree_map_with_path(label, params)


def schedule_from_config(optim_config: ml_collections.ConfigDict, *, total_steps: int,
                         steps_per_epoch: int | None = None) -> optax.Schedule:
  """`config.optim`'s schedule; warmup and milestones may be given in epochs (`*_epochs` keys)."""

  def steps(key: str, value):
    epochs = optim_config.get(f"{key}_epochs", None)
    if epochs is None or epochs == ():
      return value
    if steps_per_epoch is None:
      raise ValueError(f"config.optim.{key}_epochs needs the number of steps per epoch")
    if isinstance(epochs, (tuple, list)):
      return [round(e * steps_per_epoch) for e in epochs]
    return round(epochs * steps_per_epoch)

  return make_schedule(
      optim_config.schedule, peak=optim_config.lr, total_steps=total_steps,
      warmup_steps=steps("warmup", optim_config.get("warmup_steps", None) or 0),
      warmup_value=optim_config.get("warmup_lr", 0.0),
      end_value=optim_config.get("end_lr", 0.0), power=optim_config.get("power", 1.0),
      milestones=steps("milestones", tuple(optim_config.get("milestones", ()))),
      gamma=optim_config.get("gamma", 0.1))


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """Everything a train step needs to know about the optimizer of a config."""
  tx: optax.GradientTransformation
  schedule: optax.Schedule  # the learning rate, logged as `lr`
  needs: StepNeeds = NO_NEEDS  # what the step provides besides tx.update(grads, opt_state, params)
  average_model_state: bool = False  # model state (batch statistics) averaged like the parameters


def build(optim_config: ml_collections.ConfigDict, *, total_steps: int,
          steps_per_epoch: int | None = None, schedule: optax.Schedule | None = None,
          hparams: dict | None = None) -> Optimizer:
  """The optimizer a config asks for, with its learning-rate schedule and step needs.

  `schedule` and `hparams` replace the config's schedule and `optim_config.hparams`; their values
  may be traced arrays (jaxlab.study vmaps one program over cells that differ only in them).
  """
  if schedule is None:
    schedule = schedule_from_config(optim_config, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
  if hparams is None:
    hparams = dict(optim_config.hparams)
    if optim_config.get("weight_decay", None) is not None:  # the top-level key wins
      hparams["weight_decay"] = optim_config.weight_decay
  hparams = dict(hparams)
  found = entry(optim_config.name)
  # Keys another optimizer takes (left by switching optimizers; the CLI notes them) are dropped.
  foreign = foreign_hparams(optim_config.name, hparams)
  hparams = {k: v for k, v in hparams.items() if k not in foreign}
  needs = found.needs(hparams)
  # Step hyperparameters (SophiaG's hessian_every) are the step's: not the transformation's.
  hparams = {k: v for k, v in hparams.items() if k not in found.step_hparams}
  tx = create(optim_config.name, lr=schedule, **hparams)
  decays = found.resolve(hparams).get("weight_decay", 0)
  exclude = tuple(optim_config.get("weight_decay_exclude", ()))
  exclude_1d = optim_config.get("weight_decay_exclude_1d", True)
  # A traced weight decay (a study's per-cell value) may be non-zero: keep the groups.
  may_decay = isinstance(decays, jax.Array) or bool(decays)
  if may_decay and (exclude or exclude_1d):
    # Two instances of the optimizer, like PyTorch's two parameter groups. An optimizer's global
    # gradient clipping (timm's Lamb) spans every group: it moves in front of the split.
    # (Prodigy's step-size estimate d is per group here, as schedule-free AdamW's averaging is.)
    global_clip = None
    key = found.global_clip_key(hparams)
    if key is not None:
      global_clip = found.resolve(hparams)[key]
      hparams[key] = None
      tx = create(optim_config.name, lr=schedule, **hparams)
    no_decay = create(optim_config.name, lr=schedule, **{**hparams, "weight_decay": 0.0})
    # Extra update arguments shaped like the params (SophiaG's Hessian gradients) are split too.
    tx = optax.partition({"decay": tx, "no_decay": no_decay},
                         lambda params: weight_decay_labels(params, exclude, exclude_1d),
                         mask_compatible_extra_args=True)
    if global_clip is not None:
      tx = optax.chain(optax.clip_by_global_norm(global_clip), tx)
  if optim_config.clip_grad_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.clip_grad_norm), tx)
  multipliers = tuple(tuple(m) for m in optim_config.get("lr_multipliers", ()))
  layer_decay = optim_config.get("layer_decay", None)
  if multipliers or layer_decay is not None:
    tx = optax.chain(tx, scale_by_param_group(
        multipliers, layer_decay, tuple(optim_config.get("layer_decay_layers", ()))))

  averaging_config = optim_config.get("averaging", None)
  averaged = averaging_config is not None and averaging_config.name != "none"
  if averaged:
    kwargs = dict(averaging_config.get("hparams", {}))
    if "switch_every_epochs" in kwargs:
      if steps_per_epoch is None:
        raise ValueError("switch_every_epochs needs the number of steps per epoch")
      kwargs["switch_every"] = max(1, round(kwargs.pop("switch_every_epochs") * steps_per_epoch))
    tx = optax.chain(tx, AVERAGING[averaging_config.name](**kwargs))
  return Optimizer(tx, schedule, needs,
                   average_model_state=averaged and averaging_config.get("average_model_state", True))
