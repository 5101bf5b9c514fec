"""The mixup family on device: Mixup, CutMix, ResizeMix, FMix and SaliencyMix inside the jitted step.

`mix_images(config, rng, images)` returns the mixed images and each example's lam;
`mix_targets(labels, lam, num_classes, label_smoothing)` the matching soft targets. Together they
follow timm's `Mixup` (timm/data/mixup.py):

  * each batch (mode 'batch') or each example (mode 'elem') is mixed with probability `prob`;
    when both alphas are > 0, the region method is chosen with probability `switch_prob`, else
    Mixup; lam ~ Beta(alpha, alpha) of the chosen method;
  * example i is mixed with example B-1-i (the batch flipped);
  * targets are lam * smooth(y_i) + (1 - lam) * smooth(y_{B-1-i}), smoothing off/on values
    eps/K and 1 - eps + eps/K (label smoothing folded into the soft targets);
  * region methods correct lam to the area actually pasted (timm's correct_lam).

The region method (`region`) is CutMix (a box of area 1-lam, centre uniform, clipped at the border)
or one of:
  * ResizeMix (Qin et al., arXiv 2012.11101): the whole partner image, shrunk by tau ~ U(scale),
    pasted at a random place; lam = 1 - pasted area (no Beta draw);
  * FMix (Harris et al., arXiv 2002.12047): a binary mask of the top (1-lam) fraction of a random
    low-frequency field (Fourier spectrum decaying as 1/f^decay_power);
  * SaliencyMix (Uddin et al., arXiv 2006.01791): a CutMix box centred on the partner's most salient
    pixel, by spectral-residual saliency (Hou & Zhang 2007, what OpenCV's
    StaticSaliencySpectralResidual computes), at the image's own resolution.
In mode 'batch' one box/mask serves the whole batch (ResizeMix, FMix, CutMix as timm); SaliencyMix
centres each example's box on its own partner's saliency peak (same size for all).

Everything is jnp on the (sharded) global batch, so it runs inside `jax.jit` wherever the batch lives.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

REGIONS = ("cutmix", "resizemix", "fmix", "saliencymix")
MODES = ("batch", "elem")


@dataclasses.dataclass(frozen=True)
class MixConfig:
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0
  switch_prob: float = 0.5
  mode: str = "batch"
  correct_lam: bool = True
  region: str = "cutmix"
  resizemix_scale: tuple[float, float] = (0.1, 0.8)
  fmix_decay_power: float = 3.0

  @property
  def enabled(self) -> bool:
    return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict | dict | None) -> MixConfig:
    cfg = dict(cfg or {})
    if "resizemix_scale" in cfg:
      cfg["resizemix_scale"] = tuple(cfg["resizemix_scale"])
    unknown = sorted(set(cfg) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      valid = ", ".join(f.name for f in dataclasses.fields(cls))
      raise ValueError(f"unknown mixup key(s) {', '.join(unknown)}; valid: {valid}")
    config = cls(**cfg)
    config.check()
    return config

  def check(self) -> None:
    """One-line ValueError naming the bad field."""
    if self.mode not in MODES:
      raise ValueError(f"mixup mode {self.mode!r}; valid: {', '.join(MODES)}")
    if self.region not in REGIONS:
      raise ValueError(f"mixup region {self.region!r}; valid: {', '.join(REGIONS)}")
    for name in ("mixup_alpha", "cutmix_alpha", "fmix_decay_power"):
      if getattr(self, name) < 0:
        raise ValueError(f"mixup {name} must be >= 0, got {getattr(self, name)}")
    for name in ("prob", "switch_prob"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"mixup {name} must be in [0, 1], got {getattr(self, name)}")
    low, high = self.resizemix_scale
    if not 0 < low <= high < 1:
      raise ValueError(f"mixup resizemix_scale must satisfy 0 < low <= high < 1, got "
                       f"{self.resizemix_scale}")


def soft_targets(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """One-hot targets with timm's smoothing: off = eps/K, on = 1 - eps + eps/K."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def _box(rng: jax.Array, lam: jax.Array, height: int, width: int) -> tuple[jax.Array, ...]:
  """timm's rand_bbox: a box of side ratio sqrt(1-lam), centre uniform, clipped to the image."""
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
  key_y, key_x = jax.random.split(rng)
  cy = jax.random.randint(key_y, (), 0, height)
  cx = jax.random.randint(key_x, (), 0, width)
  return _clipped_box(cy, cx, cut_h, cut_w, height, width)


def _clipped_box(cy, cx, cut_h, cut_w, height, width):
  top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  return top, bottom, left, right


def _box_mask(top, bottom, left, right, height: int, width: int) -> jax.Array:
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)).astype(jnp.float32)


def cutmix(rng, lam, image, partner):
  """(mixed image, lam corrected to the pasted area) for one image (H, W, C)."""
  h, w = image.shape[:2]
  mask = _box_mask(*_box(rng, lam, h, w), h, w)[..., None]
  return image * (1 - mask) + partner * mask, 1.0 - mask.mean()


def resizemix(rng, scale, image, partner):
  """The partner shrunk by tau ~ U(scale) (bilinear), pasted at a uniformly drawn position."""
  h, w = image.shape[:2]
  key_tau, key_y, key_x = jax.random.split(rng, 3)
  tau = jax.random.uniform(key_tau, (), minval=scale[0], maxval=scale[1])
  box_h = jnp.maximum((tau * h).astype(jnp.int32), 1)
  box_w = jnp.maximum((tau * w).astype(jnp.int32), 1)
  top = jax.random.randint(key_y, (), 0, h - box_h + 1)
  left = jax.random.randint(key_x, (), 0, w - box_w + 1)
  # Resize by sampling: output pixel (y, x) of the box reads the partner at its scaled position
  # (pixel centres aligned, as an antialias-free bilinear resize), so the box size may be traced.
  ys = (jnp.arange(h) - top + 0.5) * (h / box_h) - 0.5
  xs = (jnp.arange(w) - left + 0.5) * (w / box_w) - 0.5
  grid_y, grid_x = jnp.meshgrid(jnp.clip(ys, 0, h - 1), jnp.clip(xs, 0, w - 1), indexing="ij")
  resized = jnp.stack([jax.scipy.ndimage.map_coordinates(partner[..., c], [grid_y, grid_x], order=1)
                       for c in range(partner.shape[-1])], axis=-1)
  mask = _box_mask(top, top + box_h, left, left + box_w, h, w)[..., None]
  return image * (1 - mask) + resized * mask, 1.0 - mask.mean()


def fmix_mask(rng, lam, height: int, width: int, decay_power: float) -> jax.Array:
  """Binary (H, W) mask: 1 on the round((1-lam)*H*W) largest values of a low-frequency field."""
  fy = jnp.fft.fftfreq(height)[:, None]
  fx = jnp.fft.rfftfreq(width)[None, :]
  freq = jnp.sqrt(fy ** 2 + fx ** 2)
  weight = 1.0 / jnp.maximum(freq, 1.0 / max(height, width)) ** decay_power
  key_re, key_im = jax.random.split(rng)
  spectrum = weight * (jax.random.normal(key_re, freq.shape) + 1j * jax.random.normal(key_im, freq.shape))
  field = jnp.fft.irfft2(spectrum, s=(height, width)).reshape(-1)
  count = jnp.round((1.0 - lam) * height * width)
  rank = jnp.argsort(jnp.argsort(-field))  # 0 for the largest value
  return (rank < count).astype(jnp.float32).reshape(height, width)


def fmix(rng, lam, image, partner, decay_power):
  mask = fmix_mask(rng, lam, *image.shape[:2], decay_power)[..., None]
  return image * (1 - mask) + partner * mask, 1.0 - mask.mean()


def spectral_residual_saliency(image: jax.Array) -> jax.Array:
  """(H, W) saliency of an (H, W, C) image: the spectral residual of its grey-level log spectrum."""
  grey = image.mean(-1)
  spectrum = jnp.fft.fft2(grey)
  log_amplitude = jnp.log(jnp.abs(spectrum) + 1e-8)
  # The residual: log amplitude minus its 3x3 local average (wrap-around, as the spectrum is periodic).
  local = sum(jnp.roll(log_amplitude, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
  residual = jnp.exp(log_amplitude - local + 1j * jnp.angle(spectrum))
  saliency = jnp.abs(jnp.fft.ifft2(residual)) ** 2
  # Light smoothing (a separable [1, 2, 1] / 4 blur) stands in for OpenCV's Gaussian blur.
  kernel = jnp.array([0.25, 0.5, 0.25])
  saliency = jax.scipy.signal.convolve(saliency, kernel[:, None], mode="same")
  return jax.scipy.signal.convolve(saliency, kernel[None, :], mode="same")


def saliencymix(rng, lam, image, partner):
  """A CutMix-sized box centred on the partner's most salient pixel, pasted from the partner."""
  del rng  # the box position is the saliency peak
  h, w = image.shape[:2]
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (h * ratio).astype(jnp.int32), (w * ratio).astype(jnp.int32)
  peak = jnp.argmax(spectral_residual_saliency(partner))
  box = _clipped_box(peak // w, peak % w, cut_h, cut_w, h, w)
  mask = _box_mask(*box, h, w)[..., None]
  return image * (1 - mask) + partner * mask, 1.0 - mask.mean()


def _region(config: MixConfig, rng, lam, image, partner):
  if config.region == "resizemix":
    return resizemix(rng, config.resizemix_scale, image, partner)
  if config.region == "fmix":
    return fmix(rng, lam, image, partner, config.fmix_decay_power)
  if config.region == "saliencymix":
    return saliencymix(rng, lam, image, partner)
  return cutmix(rng, lam, image, partner)


def _draw(config: MixConfig, rng, shape):
  """(apply, use_region, lam) of timm's _params_per_batch/_params_per_elem for `shape` draws."""
  key_apply, key_switch, key_mixup, key_region = jax.random.split(rng, 4)
  apply = jax.random.uniform(key_apply, shape) < config.prob
  if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
    use_region = jax.random.uniform(key_switch, shape) < config.switch_prob
  else:
    use_region = jnp.full(shape, config.cutmix_alpha > 0)
  lam_mixup = (jax.random.beta(key_mixup, config.mixup_alpha, config.mixup_alpha, shape)
               if config.mixup_alpha > 0 else jnp.ones(shape))
  lam_region = (jax.random.beta(key_region, config.cutmix_alpha, config.cutmix_alpha, shape)
                if config.cutmix_alpha > 0 else jnp.ones(shape))
  lam = jnp.where(apply, jnp.where(use_region, lam_region, lam_mixup), 1.0)
  return apply, use_region, lam


def mix_images(config: MixConfig, rng: jax.Array,
               images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mixed images, lam (B,) float32): example i keeps lam of itself, 1-lam of example B-1-i."""
  partners = images[::-1]
  key_draw, key_region = jax.random.split(rng)
  batch = images.shape[0]
  elem = config.mode == "elem"
  apply, use_region, lam = _draw(config, key_draw, (batch,) if elem else ())
  if not elem:
    apply, use_region, lam = (jnp.broadcast_to(a, (batch,)) for a in (apply, use_region, lam))
  # One key for the whole batch in 'batch' mode: every example gets the same box or mask.
  region_keys = (jax.random.split(key_region, batch) if elem
                 else jnp.broadcast_to(key_region, (batch,) + key_region.shape))

  def one(key, lam, use_region, apply, image, partner):
    mixed_region, lam_region = _region(config, key, lam, image, partner)
    if not config.correct_lam and config.region in ("cutmix", "saliencymix"):
      lam_region = lam
    mixed_linear = image * lam + partner * (1.0 - lam)
    mixed = jnp.where(use_region, mixed_region, mixed_linear)
    lam = jnp.where(use_region, lam_region, lam)
    return jnp.where(apply, mixed, image), jnp.where(apply, lam, 1.0)

  mixed, lam = jax.vmap(one)(region_keys, lam.astype(jnp.float32), use_region, apply,
                             images.astype(jnp.float32), partners.astype(jnp.float32))
  return mixed.astype(images.dtype), lam


def mix_targets(labels: jax.Array, lam: jax.Array, num_classes: int,
                label_smoothing: float = 0.0) -> jax.Array:
  """(B, K) float32 soft targets lam * smooth(y_i) + (1 - lam) * smooth(y_{B-1-i})."""
  targets = soft_targets(labels, num_classes, label_smoothing)
  return lam[:, None] * targets + (1.0 - lam[:, None]) * targets[::-1]
