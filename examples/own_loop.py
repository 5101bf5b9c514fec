"""jaxlab's pieces in a training loop of your own: a registered model and optimizer, plain jax.jit.

    python examples/own_loop.py

`jaxlab.trainer` does all this and more (sharding, checkpoints, evaluation, logging); this is for
a loop of your own. A model with batch statistics (BatchNorm) updates them in its forward pass,
and that is where a hand-written split/merge loop usually breaks with

    TraceContextError: Cannot mutate BatchStat from a different trace level

An nnx Variable may only be updated in the trace that created it. The forward pass runs inside
`jax.grad` (inside `jax.jit`), so the module must be built there, from plain arrays:

  - the step closes over a module, or over the `State` of `nnx.split`, made outside it: fails;
  - `nnx.merge(graphdef, params, rest)` inside the loss with `rest` a `State` (its leaves are
    Variables, created by the caller's trace): fails;
  - `nnx.merge` inside the loss from pure dicts of arrays (`nnx.to_pure_dict`), returning the
    updated model state as pure dicts too: works (`split_merge_loop`; jaxlab's TrainState keeps
    params and model state this way). `nnx.merge(..., copy=True)` also works;
  - `nnx.jit` + `nnx.value_and_grad` + `nnx.Optimizer`, which carry the module across traces
    themselves: works (`nnx_jit_loop`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxlab import models, optim

NUM_CLASSES = 10


def random_batch(seed: int = 0, batch_size: int = 32, image_shape=(8, 8, 1)):
  """Random images with random labels: a batch a model can memorize, so the loss must fall."""
  images_key, labels_key = jax.random.split(jax.random.key(seed))
  images = jax.random.normal(images_key, (batch_size, *image_shape))
  labels = jax.random.randint(labels_key, (batch_size,), 0, NUM_CLASSES)
  return images, labels


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def split_merge_loop(steps: int = 10, model_name: str = "small_cnn", optimizer: str = "adamw",
                     lr: float = 1e-2, **hparams):
  """Trains `steps` steps on one random batch; returns (losses, the trained module)."""
  model = models.create(model_name, num_classes=NUM_CLASSES, rngs=nnx.Rngs(0))
  model.train()  # BatchNorm normalizes with batch statistics and updates its running averages
  # Once, outside jit: the static graph, and the values as pure dicts of arrays (no Variables).
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  schedule = optim.make_schedule("cosine", peak=lr, total_steps=steps, warmup_steps=1)
  tx = optim.create(optimizer, lr=schedule, **hparams)  # torch-named hyperparameters
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, rest, opt_state, images, labels):
    def loss_fn(params):
      module = nnx.merge(graphdef, params, rest)  # built in this trace: it may update itself
      loss = cross_entropy(module(images), labels)
      _, _, new_rest = nnx.split(module, nnx.Param, ...)  # batch statistics after this batch
      return loss, nnx.to_pure_dict(new_rest)

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  images, labels = random_batch()
  losses = []
  for _ in range(steps):
    params, rest, opt_state, loss = train_step(params, rest, opt_state, images, labels)
    losses.append(float(loss))
  return losses, nnx.merge(graphdef, params, rest)


def nnx_jit_loop(steps: int = 10, model_name: str = "small_cnn", optimizer: str = "adamw",
                 lr: float = 1e-2, **hparams):
  """The same with flax's own transforms; returns (losses, the trained module)."""
  model = models.create(model_name, num_classes=NUM_CLASSES, rngs=nnx.Rngs(0))
  model.train()
  schedule = optim.make_schedule("cosine", peak=lr, total_steps=steps, warmup_steps=1)
  state = nnx.Optimizer(model, optim.create(optimizer, lr=schedule, **hparams), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, state, images, labels):
    loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(images), labels))(model)
    state.update(model, grads)  # updates the module's parameters in place
    return loss

  images, labels = random_batch()
  losses = [float(train_step(model, state, images, labels)) for _ in range(steps)]
  return losses, model


def accuracy(model, images, labels) -> float:
  """Eval mode: BatchNorm's running averages instead of the batch's statistics."""
  model.eval()
  return float(jnp.mean(jnp.argmax(model(images), -1) == labels))


if __name__ == "__main__":
  for loop in (split_merge_loop, nnx_jit_loop):
    losses, trained = loop(steps=20)
    print(f"{loop.__name__}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"accuracy on the batch (eval mode) {accuracy(trained, *random_batch()):.2f}")
