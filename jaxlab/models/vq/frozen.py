"""Frozen submodules: a trained network used, not trained, by another (a stage-1 tokenizer under
a stage-2 generator, a feature network for a perceptual loss).

`freeze(module)` turns every `nnx.Param` of the module into a `Frozen` variable. The trainer takes
gradients over `nnx.Param` only, so frozen arrays land in the train state's `model_state`: never
differentiated, never in the optimizer state, stored once in checkpoints, and restored there from
the other run with `config.init_from` (rename `^params/` → `model_state/<name>/`).
`eval_view(module)` runs it in eval mode whatever mode the model around it is in, so it never
updates its own statistics (codebook EMAs, batch norm).
"""

from __future__ import annotations

from flax import nnx


class Frozen(nnx.Variable):
  """An array of a frozen submodule (was an nnx.Param); model state, not trained."""


def freeze(module: nnx.Module) -> nnx.Module:
  """Replaces, in place, every nnx.Param of the module by a Frozen variable with its value."""
  for _, node in list(nnx.iter_graph(module)):
    if not isinstance(node, nnx.Module):
      continue
    for name, value in list(vars(node).items()):
      if isinstance(value, nnx.Param):
        # Assigning over a Variable attribute would set its value; replace the variable itself.
        delattr(node, name)
        setattr(node, name, Frozen(value.get_value()))
  return module


def eval_view(module: nnx.Module) -> nnx.Module:
  """The same module (sharing its arrays) in eval mode."""
  return nnx.with_attributes(module, deterministic=True, use_running_average=True,
                             raise_if_not_found=False)
