"""Optimizers by name: `create(name, lr=..., **hparams)` returns an optax GradientTransformation.

Keyword names and defaults are those of the PyTorch class each optimizer reproduces (its
`reference`): `lr`, `weight_decay`, `momentum`, `betas`, `eps`, `nesterov`, ... so a recipe ported
from PyTorch reads the same. `lr` may be a float or an optax schedule. Unknown or misspelt
hyperparameters fail in one line naming the valid ones. `describe(name)` (or `help(create)`, or
docs/reference.md) lists an optimizer's hyperparameters with their defaults; `available("adam*")`
filters the names.

An entry also says what its optimizer needs from the train step beyond
`tx.update(grads, opt_state, params)` (`StepNeeds`: SAM's gradient at a perturbed point, SophiaG's
Hessian estimate from the task), so the trainer and the study engine run every optimizer through
one step without knowing any of them by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import optax

from jaxlab.names import Pattern, matching

# A task ability an optimizer may need (see jaxlab.tasks.base): the loss on targets sampled from
# the model's own prediction, for Gauss-Newton Hessian estimates.
SAMPLED_LOSS = "sampled_loss"


@dataclasses.dataclass(frozen=True)
class StepNeeds:
  """What an optimizer needs from the train step besides `tx.update(grads, opt_state, params)`.

  - `gradient(loss_fn, params) -> ((loss, aux), grads)`: how the gradient is taken, in place of
    `jax.value_and_grad(loss_fn, has_aux=True)(params)` (SAM: at the perturbed point).
  - `update_args(step, sampled_grads) -> dict`: extra keyword arguments of `tx.update`;
    `sampled_grads()` returns the gradient of the task's sampled loss at the current parameters
    (SophiaG's Gauss-Newton-Bartlett estimate; call it under `lax.cond` to skip the extra pass).
  - `task_abilities`: abilities the task must declare for this (e.g. `SAMPLED_LOSS`).
  """
  gradient: Callable | None = None
  update_args: Callable | None = None
  task_abilities: tuple[str, ...] = ()


NO_NEEDS = StepNeeds()


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
  build: Callable[..., optax.GradientTransformation]  # build(**hparams), every default filled in
  defaults: dict[str, Any]  # the reference constructor's defaults, `lr` included
  reference: str  # e.g. "torch.optim.SGD", "timm.optim.Lamb"
  # step_needs(hparams) -> StepNeeds, from the full hyperparameters (traced values allowed).
  step_needs: Callable[[dict], StepNeeds] | None = None
  # Hyperparameters of the train step (in `defaults`), not passed to `build`.
  step_hparams: tuple[str, ...] = ()
  # The hyperparameter naming another optimizer this one wraps (SAM's base_optimizer): the
  # wrapped optimizer's hyperparameters are accepted alongside this entry's own.
  wraps: str | None = None
  # The hyperparameter of a global gradient-norm clip that must span all parameter groups
  # (timm's Lamb clips over every group); build() moves it in front of the group split.
  global_clip: str | None = None

  def base(self, hparams: dict) -> OptimizerEntry | None:
    """The wrapped optimizer's entry for these hyperparameters (None if this one wraps none)."""
    if self.wraps is None:
      return None
    return entry(hparams.get(self.wraps, self.defaults[self.wraps]))

  def resolve(self, hparams: dict) -> dict[str, Any]:
    """Every hyperparameter: the given ones over the defaults (the wrapped optimizer's too)."""
    base = self.base(hparams)
    return {**(base.defaults if base else {}), **self.defaults, **hparams}

  def needs(self, hparams: dict) -> StepNeeds:
    return self.step_needs(self.resolve(hparams)) if self.step_needs else NO_NEEDS

  def global_clip_key(self, hparams: dict) -> str | None:
    base = self.base(hparams)
    return self.global_clip or (base.global_clip if base else None)


_REGISTRY: dict[str, OptimizerEntry] = {}
DEFAULT = "sgd"  # the optimizer of `jaxlab.config.base_config()`


def register(name: str, *, reference: str, step_needs=None, step_hparams=(), wraps=None,
             global_clip=None, **defaults):
  """Decorator: `@register("adam", reference="torch.optim.Adam", lr=1e-3, betas=(0.9, 0.999), ...)`."""
  def wrap(build):
    if name in _REGISTRY:
      raise ValueError(f"optimizer '{name}' is already registered")
    _REGISTRY[name] = OptimizerEntry(build, defaults, reference, step_needs, tuple(step_hparams),
                                     wraps, global_clip)
    return build
  return wrap


def available(pattern: Pattern = None) -> list[str]:
  """Registered optimizer names, sorted; `pattern` filters them: `available("adam*")`,
  `available(["sgd*", "la*"])` (fnmatch, case-insensitive)."""
  return matching(sorted(_REGISTRY), pattern)


def entry(name: str) -> OptimizerEntry:
  if name not in _REGISTRY:
    raise ValueError(f"unknown optimizer '{name}'; valid: {', '.join(available())}")
  return _REGISTRY[name]


def describe(name: str) -> str:
  """One line: the optimizer's reference class, every hyperparameter with its default, and what
  else it takes, e.g. 'adamw — torch.optim.AdamW: lr=0.001, betas=(0.9, 0.999), eps=1e-08,
  weight_decay=0.01, amsgrad=False'. (`entry(name).defaults` is the same as a dict.)"""
  found = entry(name)
  text = f"{name} — {found.reference}: " + ", ".join(f"{k}={v!r}" for k, v in found.defaults.items())
  notes = []
  if found.wraps is not None:
    notes.append(f"also takes the hyperparameters of the {found.wraps} it wraps")
  if found.step_hparams:
    notes.append(f"{', '.join(found.step_hparams)}: the train step's")
  if found.global_clip is not None:
    notes.append(f"{found.global_clip} clips over all parameter groups together")
  if found.step_needs is not None:
    notes.append("needs more than a gradient from the train step (train it through "
                 "jaxlab.optim.build, or read entry(name).needs(hparams))")
  return text + "".join(f"; {note}" for note in notes)


def _accepted(found: OptimizerEntry, hparams: dict[str, Any]) -> set[str]:
  """The hyperparameter names an entry takes (a wrapper's depend on the optimizer it wraps)."""
  return set(found.resolve({k: v for k, v in hparams.items() if k == found.wraps}))


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
  found = entry(name)
  if found.wraps is not None and found.wraps in hparams:
    base = entry(hparams[found.wraps])  # one line for an unknown wrapped name
    if base.wraps is not None or base.step_needs is not None:
      valid = [n for n in available() if not (_REGISTRY[n].wraps or _REGISTRY[n].step_needs)]
      raise ValueError(f"{name}: {found.wraps} '{hparams[found.wraps]}' needs its own train step "
                       f"and cannot be wrapped; valid: {', '.join(valid)}")
  valid = _accepted(found, hparams)
  unknown = sorted(set(hparams) - valid)
  if unknown:
    raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer '{name}'; "
                     f"valid: {', '.join(sorted(valid))}")


def foreign_hparams(name: str, hparams: dict[str, Any]) -> list[str]:
  """Keys of `hparams` that optimizer `name` does not take but another registered one does: left
  over from switching optimizers (SGD's momentum under LAMB), not misspelt."""
  valid = _accepted(entry(name), hparams)
  others = set().union(*(e.defaults for e in _REGISTRY.values()))
  return sorted(k for k in hparams if k not in valid and k in others)


def create(name: str, **hparams) -> optax.GradientTransformation:
  """The optimizer's transformation, as the reference class with one parameter group: weight
  decay applies to every parameter. (Configs go through `jaxlab.optim.build`, which, like timm's
  `create_optimizer_v2`, exempts biases, norms and other 1-D parameters.) `entry(name).defaults`
  lists the hyperparameters and their defaults.

  For an entry with step needs (SAM, SophiaG), the update alone is not the whole optimizer: train
  it through `jaxlab.optim.build`'s `Optimizer.needs` (as the trainer does) or read
  `entry(name).needs(hparams)` in a custom step."""
  check_hparams(name, hparams)
  found = entry(name)
  resolved = found.resolve(hparams)
  return found.build(**{k: v for k, v in resolved.items() if k not in found.step_hparams})


_CREATE_DOC = create.__doc__


def document_create() -> None:
  """Appends every registered optimizer with its defaults to `create.__doc__`, for `help(create)`.
  jaxlab.optim calls it once its optimizer modules are imported (and so registered)."""
  if _CREATE_DOC is None:  # python -OO strips docstrings
    return
  lines = "\n".join(f"  - {describe(name)}" for name in available())
  create.__doc__ = (f"{_CREATE_DOC}\n\n  Every optimizer, with its hyperparameters at their defaults "
                    f"(`describe(name)` gives one line,\n  `available(pattern)` filters the names):"
                    f"\n\n{lines}\n")
