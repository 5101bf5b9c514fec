"""Shared by the convnet backbone tests: models without the cost of random initialisation.

Building a backbone eagerly compiles one initializer per parameter shape (tens of seconds for a
MobileNet on a busy 2-core CPU), so the tests build the structure with `nnx.eval_shape` and fill it
with numpy values: either a checkpoint (weight import) or `random_values` below.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab import models


@functools.cache
def _abstract(name, num_classes, kwargs):
  return nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, rngs=nnx.Rngs(0),
                                              **dict(kwargs)))


def abstract(name, num_classes=10, **kwargs):
  """The model's structure with ShapeDtypeStructs for values (a fresh copy of a cached one)."""
  return nnx.clone(_abstract(name, num_classes, tuple(sorted(kwargs.items()))))


def output_shape(model, input_shape):
  """jax.ShapeDtypeStruct of the logits of an abstract model in eval mode: nothing is computed."""
  model.eval()
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda state, x: nnx.merge(graphdef, state)(x), state,
                        jax.ShapeDtypeStruct(input_shape, jnp.float32))


def param_count(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _random_value(path, variable, rng, index):
  # numpy values, then one transfer: eager jnp.ones/zeros would compile once per shape.
  shape, dtype = variable.get_value().shape, variable.get_value().dtype
  if isinstance(variable, nnx.RngKey):
    return jax.random.key(index)
  if isinstance(variable, nnx.RngCount):
    value = np.zeros(shape)
  elif isinstance(variable, nnx.BatchStat):
    value = np.ones(shape) if path[-1] == "var" else np.zeros(shape)
  elif len(shape) >= 2:  # kernels: He normal, fan_in over all but the output axis
    value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
  elif path[-1] == "scale":
    value = np.ones(shape)
  elif path[-1] == "bias":  # zero, so that the logits depend on the input, not on biases
    value = np.zeros(shape)
  else:  # layer scales, GRN weights
    value = 0.1 * rng.standard_normal(shape)
  return jnp.asarray(value.astype(dtype))


def materialize(model, seed=0):
  """Fills every still-abstract variable of `model` in place (random weights, unit BN stats)."""
  rng = np.random.default_rng(seed)
  for index, (path, variable) in enumerate(nnx.to_flat_state(nnx.state(model))):
    if isinstance(variable.get_value(), jax.ShapeDtypeStruct):
      variable.set_value(_random_value(path, variable, rng, index))
  return model


def built(name, num_classes=10, seed=0, **kwargs):
  """A concrete model with random values, in train mode."""
  return materialize(abstract(name, num_classes, **kwargs), seed)


def jit_apply(model, x):
  """model(x) compiled; the model's state updates (batch statistics) are written back."""
  return nnx.jit(lambda m, x: m(x))(model, x)
