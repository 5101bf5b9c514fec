"""Diffusion: train a denoising network with a formulation's loss (DDPM, EDM, flow matching).

The trainer sees an ordinary task: `loss` draws noise levels and noise from the step's rng and
returns the formulation's loss; with `conditional`, labels are replaced by the null class with
probability `label_dropout` so the one network also learns the unconditional model that
classifier-free guidance needs. `evaluate` reports, at the formulation's fixed `eval_levels` and
with fixed noise, the loss (`loss`, averaged over the levels) and the denoised sample's mean
squared error per level (`mse/<level>`), so runs, checkpoints and EMA weights can be compared.
Images should be scaled to [-1, 1] (dataset mean 0.5, std 0.5), which EDM's sigma_data = 0.5
assumes.

Latent diffusion: with `config.task.autoencoder` (the stage-1 run's `config.model`) the model is
a `LatentDiffusionModel` (jaxlab/diffusion/latent.py) holding the denoiser and the frozen
autoencoder, restored from the stage-1 run with `config.init_from`:

    config.init_from.path = "workdirs/tokenizer"
    config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
    config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/autoencoder/"),)

`loss` and `evaluate` encode the batch inside the step (eval mode, no gradient) and run the
formulation on the scaled latents (so `mse/*` is in latent units); `generate` draws latents and
decodes them to images. Without it the model is the denoiser itself and everything is in pixels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxlab.diffusion import formulations
from jaxlab.diffusion.config import check_diffusion_config, diffusion_task_config
from jaxlab.diffusion.generate import generate
from jaxlab.diffusion.latent import LatentDiffusionModel, latent_shape
from jaxlab.diffusion.samplers import SAMPLERS, Sampler
from jaxlab.diffusion.samplers import create as create_sampler
from jaxlab.tasks.registry import register
from jaxlab.tasks.base import GENERATES, ModelBuilder, Sampling, Task, check_options, plain

# Fixed noise for `evaluate`: the same for every checkpoint, so their numbers compare.
_EVAL_NOISE_SEED = 0


@register
@dataclasses.dataclass(frozen=True)
class Diffusion(Task):
  """config.task: see jaxlab/diffusion/config.py (formulation and its hyperparameters,
  conditioning, sampling defaults, latent diffusion)."""
  name = "diffusion"
  abilities = frozenset({GENERATES})
  sampling_options = ("sampler", "steps", "guidance", "eta")

  formulation: formulations.DDPM | formulations.EDM | formulations.FlowMatching
  conditional: bool = True
  label_dropout: float = 0.1
  autoencoder: dict | None = None  # stage-1 model config: latent diffusion on its frozen latents
  latent_scale: float = 0.0
  sampler: str = "heun"  # sampling defaults of `jaxlab.sample`
  sample_steps: int = 18
  guidance: float = 1.0

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    return diffusion_task_config()

  @classmethod
  def from_config(cls, task_config: ml_collections.ConfigDict) -> Diffusion:
    check_diffusion_config(task_config)
    autoencoder = task_config.autoencoder
    return cls(formulations.from_config(task_config), task_config.conditional, task_config.label_dropout,
               None if autoencoder is None else dict(plain(autoencoder)), task_config.latent_scale,
               task_config.sampler, task_config.sample_steps, task_config.guidance)

  @property
  def latent(self) -> bool:
    return self.autoencoder is not None

  def init(self, build: ModelBuilder) -> nnx.Module:
    shape = tuple(build.info.image_shape)
    if self.latent:
      autoencoder = build(self.autoencoder)
      shape = latent_shape(autoencoder, shape, self.autoencoder["name"])
    num_classes = build.info.num_classes if self.conditional else 0
    denoiser = build(in_channels=shape[-1], num_classes=num_classes, img_size=shape[0])
    if not self.latent:
      return denoiser
    return LatentDiffusionModel(denoiser, autoencoder, shape, self.latent_scale)

  def denoiser(self, model: nnx.Module) -> nnx.Module:
    """The network the formulation calls: `net(x, time, labels)`."""
    return model.denoiser if self.latent else model

  def _data(self, model: nnx.Module, images: jax.Array, *, train: bool = False) -> jax.Array:
    """What is diffused: the images, or their scaled latents."""
    return model.encode(images, keep_scale=train) if self.latent else images

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
    x0 = self._data(model, batch["image"], train=True)
    loss = self.formulation.loss(self.denoiser(model), x0, labels, loss_key).mean()
    metrics = {"loss": loss}
    if self.latent:
      metrics["latent_scale"] = model.latent_scale[...]
    return loss, metrics

  def evaluate(self, model, batch):
    x0, mask = self._data(model, batch["image"]), batch["mask"]
    labels = self._labels(model, batch)
    net = self.denoiser(model)
    noise = jax.random.normal(jax.random.PRNGKey(_EVAL_NOISE_SEED), x0.shape, x0.dtype)
    sums, loss = {}, 0.0
    for level in self.formulation.eval_levels:
      levels = jnp.full((x0.shape[0],), level)
      loss += self.formulation.level_loss(net, x0, labels, levels, noise)
      x = self._noisy(x0, noise, levels)
      denoised, _ = self.formulation.predict(net, x, levels, labels)
      mse = jnp.mean(((denoised - x0) ** 2).reshape(x0.shape[0], -1), axis=1)
      sums[f"mse/{self.formulation.level_name(level)}"] = (mse * mask).sum()
    sums["loss"] = (loss / len(self.formulation.eval_levels) * mask).sum()
    sums["count"] = mask.sum()
    return sums

  def _noisy(self, x0, noise, levels):
    alpha, sigma = self.formulation.marginal(levels)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return alpha.reshape(shape) * x0 + sigma.reshape(shape) * noise

  def prepare_sampling(self, info, **options) -> Sampling:
    """Options: sampler (ddpm, ddim, euler, heun, dpmpp_2m), steps, guidance (1 = none), eta
    (DDIM's); omitted ones come from config.task (sampler, sample_steps, guidance)."""
    check_options(self, options)
    sampler = options.get("sampler") or self.sampler
    steps = options.get("steps") or self.sample_steps
    guidance = self.guidance if options.get("guidance") is None else options["guidance"]
    eta = options.get("eta") or 0.0
    if steps <= 0:
      raise ValueError(f"steps must be positive, got {steps}")
    if sampler not in SAMPLERS:
      raise ValueError(f"unknown sampler '{sampler}'; valid: {', '.join(SAMPLERS)}")
    if eta != 0.0 and sampler != "ddim":
      raise ValueError(f"eta is DDIM's; sampler '{sampler}' takes none")
    if guidance != 1.0 and not self.conditional:
      raise ValueError("guidance needs a class-conditional run; this one is unconditional "
                       "(use guidance 1)")
    solver = create_sampler(sampler, self.formulation.grid(steps),
                            **({"eta": eta} if sampler == "ddim" else {}))

    def draw(model, labels, rng):
      if not self.conditional:  # the network's only label row
        return self.generate(model, solver, jnp.full_like(labels, self.null_label(model)), rng,
                             info.image_shape)
      return self.generate(model, solver, labels, rng, info.image_shape, guidance=guidance,
                           null_label=self.null_label(model))
    summary = {"sampler": sampler, "steps": steps, "guidance": guidance, "nfe": solver.nfe}
    return Sampling(draw, self.conditional, summary)

  def generate(self, model: nnx.Module, sampler: Sampler, labels: jax.Array, rng: jax.Array,
               image_shape, *, guidance: float = 1.0, null_label: int | None = None) -> jax.Array:
    """Images [len(labels), *image_shape] in the data's scale (model in eval mode): samples of
    pixels, or of latents decoded by the frozen autoencoder. Arguments as `diffusion.generate`."""
    shape = model.latent_shape if self.latent else tuple(image_shape)
    samples = generate(self.denoiser(model), self.formulation, sampler, labels, rng, shape,
                       guidance=guidance, null_label=null_label)
    return model.decode(samples) if self.latent else samples
