"""Stage 2: MaskGIT on the codes of a frozen stage-1 tokenizer.

The model is `MaskGITModel(transformer, tokenizer)`. The tokenizer is built from
`config.task.tokenizer` (the stage-1 `config.model`) and frozen (`jaxlab.models.vq.frozen`): its
arrays are model state, never trained, stored once in checkpoints. Its trained values come from
the tokenizer run through `config.init_from`:

    config.init_from.path = "workdirs/tokenizer"
    config.init_from.include = ("^params/autoencoder/", "^model_state/autoencoder/")
    config.init_from.rename = ((r"^(params|model_state)/autoencoder/", "model_state/tokenizer/"),)

(`configs/maskgit_digits.py` sets this up.) Training: codes of the batch (tokenizer in eval mode),
a cosine-scheduled random fraction of them replaced by MASK, cross-entropy on the masked ones;
labels are dropped to "no class" with probability `label_dropout` (for guidance). Eval reports
the same loss and masked-code accuracy at masks drawn from a fixed key. `sample` decodes codes
(`jaxlab.models.vq.maskgit.decode`) and the tokenizer turns them into images; guidance follows
the diffusion convention uncond + w·(cond − uncond), w = 1 none (MaskGIT's guidance scale s is
w − 1).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxlab.models.vq import maskgit
from jaxlab.models.vq.frozen import eval_view, freeze
from jaxlab.tasks.registry import register
from jaxlab.tasks.base import GENERATES, ModelBuilder, Sampling, Task, check_options

# config.task.sampling: keywords of maskgit.decode, with guidance w (1 = none) for its scale w − 1.
SAMPLING_DEFAULTS = {"steps": 8, "temperature": 1.0, "final_temperature": 1.0,
                     "choice_temperature": 4.5, "guidance": 1.0}


class MaskGITModel(nnx.Module):
  """The trained transformer and the frozen tokenizer whose codes it models."""

  def __init__(self, transformer: maskgit.MaskGITTransformer, tokenizer: nnx.Module,
               code_shape: tuple[int, ...]):
    self.transformer = transformer
    self.tokenizer = freeze(tokenizer)
    self.code_shape = code_shape

  def codes(self, images: jax.Array) -> jax.Array:
    """(B, L) codes of images; the tokenizer always runs in eval mode."""
    codes = eval_view(self.tokenizer).encode(images).codes
    return jax.lax.stop_gradient(codes.reshape(codes.shape[0], -1))

  def images(self, codes: jax.Array) -> jax.Array:
    return eval_view(self.tokenizer).decode_codes(codes.reshape((codes.shape[0],) + self.code_shape))


@register
@dataclasses.dataclass(frozen=True)
class MaskGIT(Task):
  """config.task: tokenizer (the stage-1 run's config.model), label_dropout, label_smoothing,
  sampling (SAMPLING_DEFAULTS' keys)."""
  name = "maskgit"
  abilities = frozenset({GENERATES})
  sampling_options = ("sampler", "steps", "guidance")

  tokenizer: dict = dataclasses.field(default_factory=lambda: {"name": "vq_autoencoder"})
  label_dropout: float = 0.1
  label_smoothing: float = 0.1
  sampling: dict = dataclasses.field(default_factory=lambda: dict(SAMPLING_DEFAULTS))

  def __post_init__(self):
    if not 0.0 <= self.label_dropout <= 1.0:
      raise ValueError(f"task.label_dropout must be in [0, 1], got {self.label_dropout}")
    if "name" not in self.tokenizer:
      raise ValueError("task.tokenizer needs the stage-1 model config, with its 'name'")
    unknown = sorted(set(self.sampling) - set(SAMPLING_DEFAULTS))
    if unknown:
      raise ValueError(f"unknown task.sampling key(s) {', '.join(unknown)}; valid: "
                       f"{', '.join(sorted(SAMPLING_DEFAULTS))}")

  def init(self, build: ModelBuilder) -> nnx.Module:
    tokenizer = build(self.tokenizer)
    code_shape = tuple(tokenizer.code_shape(build.info.image_shape))
    if getattr(tokenizer.quantizer, "codebook_sizes", None) is not None:
      raise ValueError("maskgit models one code per position; a residual quantizer's stacked codes "
                       "need a depth transformer (RQ-Transformer), which is not implemented")
    transformer = build(in_channels=None, codebook_size=tokenizer.codebook_size,
                        seq_len=math.prod(code_shape))
    return MaskGITModel(transformer, tokenizer, code_shape)

  def _masked(self, codes, rng, mask_token):
    """Codes with a cosine-scheduled random subset (at least one per example) set to MASK."""
    batch, length = codes.shape
    ratio_key, order_key = jax.random.split(rng)
    ratio = maskgit.mask_ratio(jax.random.uniform(ratio_key, (batch, 1)))
    num_masked = jnp.clip(jnp.ceil(ratio * length), 1, length)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, codes.shape), axis=-1), axis=-1)
    masked = ranks < num_masked
    return jnp.where(masked, mask_token, codes), masked

  def _loss_terms(self, model, batch, rng, drop_labels: bool):
    transformer = model.transformer
    codes = model.codes(batch["image"])
    mask_key, label_key = jax.random.split(rng)
    inputs, masked = self._masked(codes, mask_key, transformer.mask_token)
    labels = batch["label"].astype(jnp.int32)
    if drop_labels and self.label_dropout > 0:
      dropped = jax.random.bernoulli(label_key, self.label_dropout, labels.shape)
      labels = jnp.where(dropped, transformer.null_class, labels)
    logits = transformer(inputs, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(codes, transformer.codebook_size), self.label_smoothing)
    ce = optax.softmax_cross_entropy(logits, targets)
    weights = masked.astype(jnp.float32)
    per_example_loss = (ce * weights).sum(-1) / weights.sum(-1)
    per_example_acc = ((logits.argmax(-1) == codes) * weights).sum(-1) / weights.sum(-1)
    return per_example_loss, per_example_acc

  def loss(self, model, batch, rng):
    loss, accuracy = self._loss_terms(model, batch, rng, drop_labels=True)
    loss = loss.mean()
    return loss, {"loss": loss, "masked_accuracy": accuracy.mean()}

  def evaluate(self, model, batch):
    # A fixed key: every evaluation masks the same positions, so evals are comparable.
    loss, accuracy = self._loss_terms(model, batch, jax.random.PRNGKey(0), drop_labels=False)
    mask = batch["mask"].astype(jnp.float32)
    return {"loss": (loss * mask).sum(), "masked_accuracy": (accuracy * mask).sum(), "count": mask.sum()}

  def prepare_sampling(self, info, **options) -> Sampling:
    """Options: sampler ('maskgit' only), steps (decoding steps), guidance (1 = none); omitted
    ones and the temperatures come from config.task.sampling."""
    check_options(self, options)
    if options.get("sampler") not in (None, "maskgit"):
      raise ValueError(f"a '{self.name}' run decodes with 'maskgit'; sampler '{options['sampler']}' "
                       "is for diffusion runs")
    settings = {**SAMPLING_DEFAULTS, **self.sampling,
                **{k: v for k, v in options.items() if k != "sampler" and v is not None}}
    if settings["steps"] <= 0:
      raise ValueError(f"steps must be positive, got {settings['steps']}")
    guidance = settings.pop("guidance")

    def draw(model, labels, rng):
      codes = maskgit.decode(model.transformer, labels, rng, guidance_scale=guidance - 1.0, **settings)
      return model.images(codes)
    # One transformer pass per decoding step (the guided pass is batched with it).
    summary = {"sampler": "maskgit", "steps": settings["steps"], "guidance": guidance,
               "nfe": settings["steps"]}
    return Sampling(draw, True, summary)
