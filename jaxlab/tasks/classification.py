"""Image classification: softmax cross-entropy with optional label smoothing, top-1 accuracy.

With `task.mixup` enabled (see `jaxlab.tasks.mixing`), each train step mixes its batch on device
(Mixup/CutMix and relatives) with the step's fresh rng and trains on the soft targets, into which
label smoothing is then folded (timm's Mixup); training accuracy is against the unmixed labels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxlab.tasks import mixing
from jaxlab.tasks.registry import register
from jaxlab.tasks.base import CLASSIFIES, SAMPLED_LOSS, ModelBuilder, Task


@register
@dataclasses.dataclass(frozen=True)
class Classification(Task):
  """config.task: label_smoothing; mixup (timm's Mixup arguments, jaxlab/tasks/mixing.py: off
  while both alphas are 0; region: cutmix, resizemix, fmix or saliencymix)."""
  name = "classification"
  abilities = frozenset({CLASSIFIES, SAMPLED_LOSS})

  label_smoothing: float = 0.0
  mixup: mixing.MixConfig = dataclasses.field(default_factory=mixing.MixConfig)

  def __post_init__(self):
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"config.task.label_smoothing must be in [0, 1), got {self.label_smoothing}")

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> Classification:
    task = super().from_config(task_config)
    try:
      mixup = mixing.MixConfig.from_config(task.mixup)
    except ValueError as e:
      raise ValueError(f"config.task.mixup: {e}") from None
    return dataclasses.replace(task, mixup=mixup)

  def init(self, build: ModelBuilder) -> nnx.Module:
    return build()

  def _cross_entropy(self, logits, labels):
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), self.label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)

  def loss(self, model, batch, rng):
    # rng drives the mixing; the model draws its dropout keys from the step's reseeded streams.
    if self.mixup.enabled:
      images, lam = mixing.mix_images(self.mixup, rng, batch["image"])
      logits = model(images)
      targets = mixing.mix_targets(batch["label"], lam, logits.shape[-1], self.label_smoothing)
      loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
    else:
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
