"""Image classification: softmax cross-entropy with optional label smoothing, top-1 accuracy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxlab import models


@dataclasses.dataclass(frozen=True)
class Classification:
  label_smoothing: float = 0.0

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> "Classification":
    return cls(label_smoothing=task_config.get("label_smoothing", 0.0))

  def init(self, config, info, rngs: nnx.Rngs) -> nnx.Module:
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    kwargs.setdefault("in_channels", info.image_shape[-1])  # every backbone takes it
    return models.create(config.model.name, num_classes=info.num_classes, rngs=rngs,
                         dtype=jnp.dtype(config.compute_dtype), **kwargs)

  def _cross_entropy(self, logits, labels):
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), self.label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)

  def loss(self, model, batch, rng):
    del rng  # the model draws its own dropout keys from the step's reseeded streams
    logits = model(batch["image"])
    loss = self._cross_entropy(logits, batch["label"]).mean()
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    return loss, {"loss": loss, "accuracy": accuracy}

  def sampled_loss(self, model, batch, rng):
    """Cross-entropy on labels drawn from the model's own prediction (SophiaG's Hessian estimate)."""
    logits = model(batch["image"]).astype(jnp.float32)
    sampled = jax.random.categorical(rng, jax.lax.stop_gradient(logits))
    return optax.softmax_cross_entropy_with_integer_labels(logits, sampled).mean()

  def evaluate(self, model, batch):
    logits = model(batch["image"])
    mask = batch["mask"]
    correct = (logits.argmax(-1) == batch["label"]).astype(jnp.float32)
    return {
        "loss": (self._cross_entropy(logits, batch["label"]) * mask).sum(),
        "accuracy": (correct * mask).sum(),
        "count": mask.sum(),
    }
