"""Diffusion: train a denoising network with a formulation's loss (DDPM, EDM, flow matching).

The trainer sees an ordinary task: `loss` draws noise levels and noise from the step's rng and
returns the formulation's loss; with `conditional`, labels are replaced by the null class with
probability `label_dropout` so the one network also learns the unconditional model that
classifier-free guidance needs. `evaluate` reports, at the formulation's fixed `eval_levels` and
with fixed noise, the loss (`loss`, averaged over the levels) and the denoised sample's mean
squared error per level (`mse/<level>`), so runs, checkpoints and EMA weights can be compared.
Images should be scaled to [-1, 1] (dataset mean 0.5, std 0.5), which EDM's sigma_data = 0.5
assumes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxlab import models
from jaxlab.diffusion import formulations
from jaxlab.diffusion.config import check_diffusion_config

# Fixed noise for `evaluate`: the same for every checkpoint, so their numbers compare.
_EVAL_NOISE_SEED = 0


@dataclasses.dataclass(frozen=True)
class Diffusion:
  formulation: formulations.DDPM | formulations.EDM | formulations.FlowMatching
  conditional: bool = True
  label_dropout: float = 0.1

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> Diffusion:
    check_diffusion_config(task_config)
    return cls(formulations.from_config(task_config), task_config.conditional, task_config.label_dropout)

  def init(self, config, info, rngs: nnx.Rngs) -> nnx.Module:
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    kwargs.setdefault("in_channels", info.image_shape[-1])
    kwargs.setdefault("img_size", info.image_shape[0])
    return models.create(config.model.name, num_classes=info.num_classes if self.conditional else 0,
                         rngs=rngs, dtype=jnp.dtype(config.compute_dtype), **kwargs)

  @staticmethod
  def null_label(model: nnx.Module) -> int:
    """The label the network reads as "no class" (its number of classes)."""
    return model.num_classes

  def _labels(self, model, batch):
    return batch["label"] if self.conditional else jnp.full_like(batch["label"], self.null_label(model))

  def training_labels(self, labels: jax.Array, null_label: int, rng: jax.Array) -> jax.Array:
    """Labels with each replaced by the null class with probability `label_dropout` (CFG)."""
    if not self.conditional:
      return jnp.full_like(labels, null_label)
    if self.label_dropout == 0:
      return labels
    return jnp.where(jax.random.bernoulli(rng, self.label_dropout, labels.shape), null_label, labels)

  def loss(self, model, batch, rng):
    drop_key, loss_key = jax.random.split(rng)
    labels = self.training_labels(batch["label"], self.null_label(model), drop_key)
    loss = self.formulation.loss(model, batch["image"], labels, loss_key).mean()
    return loss, {"loss": loss}

  def evaluate(self, model, batch):
    x0, mask = batch["image"], batch["mask"]
    labels = self._labels(model, batch)
    noise = jax.random.normal(jax.random.PRNGKey(_EVAL_NOISE_SEED), x0.shape, x0.dtype)
    sums, loss = {}, 0.0
    for level in self.formulation.eval_levels:
      levels = jnp.full((x0.shape[0],), level)
      loss += self.formulation.level_loss(model, x0, labels, levels, noise)
      x = self._noisy(x0, noise, levels)
      denoised, _ = self.formulation.predict(model, x, levels, labels)
      mse = jnp.mean(((denoised - x0) ** 2).reshape(x0.shape[0], -1), axis=1)
      sums[f"mse/{self.formulation.level_name(level)}"] = (mse * mask).sum()
    sums["loss"] = (loss / len(self.formulation.eval_levels) * mask).sum()
    sums["count"] = mask.sum()
    return sums

  def _noisy(self, x0, noise, levels):
    alpha, sigma = self.formulation.marginal(levels)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return alpha.reshape(shape) * x0 + sigma.reshape(shape) * noise
