"""Cells -> groups that train as one compiled program.

Cells of one backbone and optimizer differ only in grid values and seed. A grid key is *traced*
when it is a number that varies within the pair and the optimizer's code accepts a traced array
for it (probed once with `jax.eval_shape`; an optimizer that branches in Python on a value, e.g.
`if weight_decay != 0`, cannot take it). Traced values and seeds become per-cell inputs of one
vmapped program; every other key splits the pair into separate groups. `lr` is traced through the
schedule's shape times the cell's peak, which is exact when the schedule ends at 0
(`recipe.optim.end_lr == 0`); otherwise it is a group key as well.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import numbers

import jax
import jax.numpy as jnp
import ml_collections

from jaxlab import optim
from jaxlab.optim.build import schedule_from_config
from jaxlab.study.spec import Cell, cell_config, hparams_of


@dataclasses.dataclass(frozen=True)
class Group:
  """Cells trained together; `traced` names their per-cell grid keys (seeds are always per cell)."""
  backbone: str
  optimizer: str
  cells: tuple[Cell, ...]
  traced: tuple[str, ...]
  vmapped: bool = True

  @property
  def id(self) -> str:
    """Stable name of the group's directory: a digest of its cells and how they are run."""
    text = "\n".join([*(c.id for c in self.cells), ",".join(self.traced), str(self.vmapped)])
    return hashlib.sha1(text.encode()).hexdigest()[:12]

  @property
  def name(self) -> str:
    return f"{self.backbone}/{self.optimizer} ({len(self.cells)} cells)"


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


@functools.cache
def _traceable(optimizer: str, key: str, hparams: tuple, lr: float) -> bool:
  """Whether `optimizer` builds and updates with a traced `key` (others at these values)."""
  config = ml_collections.ConfigDict(
      {"name": optimizer, "lr": lr, "schedule": "constant", "warmup_steps": 0, "hparams": {},
       "clip_grad_norm": None, "weight_decay_exclude": (), "weight_decay_exclude_1d": True})
  unit = schedule_from_config(config, total_steps=10)
  params = {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))}

  def update(value):
    hp = dict(hparams)
    schedule = None
    if key == "lr":
      schedule = lambda count: value * unit(count) / lr
    else:
      hp[key] = value
    built = optim.build(config, total_steps=10, schedule=schedule, hparams=hp)
    tx, needs = built.tx, built.needs
    # The update's extra arguments, as the train step would pass them (SophiaG's Hessian).
    extra = needs.update_args(jnp.asarray(1), lambda: params) if needs.update_args else {}
    return tx.update(params, tx.init(params), params, **extra)

  value = lr if key == "lr" else dict(hparams)[key]
  jax.eval_shape(lambda: update(value))  # with the Python number: must work, else not our call
  try:
    jax.eval_shape(jax.vmap(update), jnp.full((2,), value, jnp.float32))
    return True
  except (jax.errors.ConcretizationTypeError, TypeError, ValueError, AttributeError):
    return False


def traced_keys(study: ml_collections.ConfigDict, cells: list[Cell]) -> tuple[str, ...]:
  """Grid keys that vary among `cells` (one backbone/optimizer pair) and can be traced."""
  keys = []
  first = cells[0]
  for key, _ in first.grid:
    values = {c.grid_dict[key] for c in cells}
    if len(values) < 2 or not all(_is_number(v) for v in values):
      continue
    config = cell_config(study, first)
    if key == "lr" and config.optim.get("end_lr", 0.0) != 0.0:
      continue
    hparams = tuple(sorted(hparams_of(study, first).items()))
    if _traceable(first.optimizer, key, hparams, float(config.optim.lr)):
      keys.append(key)
  return tuple(keys)


def plan(study: ml_collections.ConfigDict, cells: list[Cell]) -> list[Group]:
  """Groups of the given cells, in cell order: one program per group."""
  pairs: dict[tuple[str, str], list[Cell]] = {}
  for cell in cells:
    pairs.setdefault((cell.backbone, cell.optimizer), []).append(cell)
  limit = int(study.get("max_cells_per_program", 0) or 0)
  groups = []
  for (backbone, optimizer), members in pairs.items():
    if not study.get("vmap", True):
      groups += [Group(backbone, optimizer, (c,), (), vmapped=False) for c in members]
      continue
    traced = traced_keys(study, members)
    split: dict[tuple, list[Cell]] = {}
    for cell in members:  # cells that agree on every non-traced key share a program
      static = tuple((k, v) for k, v in cell.grid if k not in traced)
      split.setdefault(static, []).append(cell)
    for same in split.values():
      size = limit or len(same)
      for start in range(0, len(same), size):
        chunk = tuple(same[start:start + size])
        groups.append(Group(backbone, optimizer, chunk, traced if len(chunk) > 1 else ()))
  return groups
