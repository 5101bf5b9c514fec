"""Augmentations and recipes: on-device mixing (Mixup, CutMix, ResizeMix, FMix, SaliencyMix),
RandAugment and random erasing in the tf.data pipeline, and the CIFAR-100 recipes end to end on
`tfds.testing.mock_data`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxlab import trainer
from jaxlab.config import ConfigError, load_config_file, validate
from jaxlab.data import augment, randaugment
from jaxlab.tasks import mixing

B, H, W, C, K = 8, 16, 16, 3, 10


def _images():
  # Example i is the constant i + 1 on every pixel, so a mixed pixel says where it came from.
  return jnp.broadcast_to(jnp.arange(1.0, B + 1)[:, None, None, None], (B, H, W, C))


def _labels():
  return jnp.arange(B) % K


_mix_images = jax.jit(mixing.mix_images, static_argnums=0)  # eager op-by-op dispatch is slower


def _mix(seed=0, **kwargs):
  return _mix_images(mixing.MixConfig(**kwargs), jax.random.key(seed), _images())


# ---- Mixup / CutMix (timm's Mixup) ---------------------------------------------------------------

def test_mixup_blends_each_example_with_its_mirror_partner():
  mixed, lam = _mix(mixup_alpha=0.8)
  assert np.all(lam == lam[0]) and 0 < lam[0] < 1  # 'batch' mode: one lam for all
  x = np.arange(1.0, B + 1)
  np.testing.assert_allclose(mixed[:, 0, 0, 0], lam * x + (1 - lam) * x[::-1], rtol=1e-6)
  targets = mixing.mix_targets(_labels(), lam, K)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  for i in range(B):
    expected = np.zeros(K)
    expected[i % K] += lam[i]
    expected[(B - 1 - i) % K] += 1 - lam[i]
    np.testing.assert_allclose(targets[i], expected, atol=1e-6)


def test_label_smoothing_is_folded_into_the_soft_targets():
  lam = jnp.full((B,), 0.7)
  targets = mixing.mix_targets(_labels(), lam, K, label_smoothing=0.1)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  # timm: off = 0.1/K, on = 0.9 + 0.1/K; mixed 0.7 / 0.3.
  assert np.isclose(targets[0, 0], 0.7 * (0.9 + 0.01) + 0.3 * 0.01)
  assert np.isclose(targets[0, 7], 0.3 * (0.9 + 0.01) + 0.7 * 0.01)
  assert np.isclose(targets[0, 3], 0.01)


def test_cutmix_pastes_one_box_whose_area_is_one_minus_lam():
  lams = []
  for seed in range(6):
    mixed, lam = _mix(seed, cutmix_alpha=1.0)
    from_partner = np.asarray(mixed[..., 0]) == np.arange(B, 0, -1)[:, None, None]
    kept = np.asarray(mixed[..., 0]) == np.arange(1, B + 1)[:, None, None]
    assert np.all(from_partner | kept)  # no blending: every pixel from one image
    np.testing.assert_allclose(from_partner[0].mean(), 1 - lam[0], atol=1e-6)
    rows, cols = np.nonzero(from_partner[0])
    if rows.size:  # a rectangle: its bounding box is filled
      assert from_partner[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    np.testing.assert_array_equal(from_partner[0], from_partner[1])  # one box per batch
    lams.append(lam[0])
  assert len(set(np.round(lams, 6))) > 1


def test_switch_prob_and_prob():
  # switch_prob 1: always the region method (no blended pixels); prob 0: untouched.
  mixed, _ = _mix(3, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=1.0)
  assert set(np.unique(mixed[0])) <= {1.0, float(B)}
  mixed, lam = _mix(3, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0)
  np.testing.assert_array_equal(mixed, _images())
  np.testing.assert_array_equal(lam, 1.0)


def test_elem_mode_draws_per_example():
  _, lam = _mix(1, mixup_alpha=1.0, mode="elem")
  assert len(set(np.round(np.asarray(lam), 6))) == B


def test_mixing_is_deterministic_for_a_key_and_runs_under_jit():
  a, b = _mix(5, mixup_alpha=1.0, mode="elem"), _mix(5, mixup_alpha=1.0, mode="elem")
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], _mix(6, mixup_alpha=1.0, mode="elem")[0])


# ---- ResizeMix, FMix, SaliencyMix ----------------------------------------------------------------

def test_resizemix_pastes_the_shrunk_partner_in_a_box_of_area_one_minus_lam():
  for seed in range(3):
    mixed, lam = _mix(seed, cutmix_alpha=1.0, region="resizemix", resizemix_scale=(0.25, 0.75))
    pasted = np.asarray(mixed[0, ..., 0]) == float(B)  # the partner is constant: resizing keeps it
    np.testing.assert_allclose(pasted.mean(), 1 - lam[0], atol=1e-6)
    side = np.sqrt(pasted.sum())
    assert int(0.25 * H) <= side <= int(0.75 * H) + 1
  # A non-constant partner: the box holds a shrunk copy (its corners are the partner's corners).
  image = jnp.zeros((H, W, C))
  partner = jnp.broadcast_to(jnp.arange(W, dtype=jnp.float32)[None, :, None], (H, W, C))
  mixed, lam = jax.jit(mixing.resizemix, static_argnums=1)(jax.random.key(0), (0.5, 0.5), image,
                                                           partner)
  assert np.isclose(lam, 0.75)
  rows, cols = np.nonzero(np.asarray(mixed[..., 0]) != 0)
  left = cols.min() if cols.min() > 0 else None
  if left is not None:
    assert np.asarray(mixed)[rows.min(), left - 1, 0] == 0 or left == 0
  inside = np.asarray(mixed[rows.min():rows.max() + 1, :, 0])
  assert inside.max() > W - 2  # the partner's right edge made it into the box


def test_fmix_mask_is_binary_with_exact_area_and_low_frequency():
  for lam in (0.2, 0.5, 0.9):
    mask = np.asarray(jax.jit(mixing.fmix_mask, static_argnums=(2, 3, 4))(
        jax.random.key(1), jnp.float32(lam), 32, 32, 3.0))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.sum() == round((1 - lam) * 32 * 32)
  # Low frequency: far fewer 0/1 changes between neighbours than a random mask of the same area.
  edges = np.abs(np.diff(mask, axis=0)).sum() + np.abs(np.diff(mask, axis=1)).sum()
  shuffled = np.random.default_rng(0).permutation(mask.reshape(-1)).reshape(mask.shape)
  random_edges = np.abs(np.diff(shuffled, axis=0)).sum() + np.abs(np.diff(shuffled, axis=1)).sum()
  assert edges < 0.5 * random_edges
  mixed, lam = _mix(2, cutmix_alpha=1.0, region="fmix")
  np.testing.assert_allclose((np.asarray(mixed[0, ..., 0]) == float(B)).mean(), 1 - lam[0], atol=1e-6)


def test_saliencymix_centres_the_box_on_the_partners_salient_spot():
  image = jnp.ones((32, 32, 3))
  partner = jnp.zeros((32, 32, 3)).at[20:23, 6:9].set(2.0)  # one bright blob
  saliency = mixing.spectral_residual_saliency(partner)
  peak = np.unravel_index(int(jnp.argmax(saliency)), saliency.shape)
  assert 18 <= peak[0] <= 24 and 4 <= peak[1] <= 10
  mixed, lam = jax.jit(mixing.saliencymix)(jax.random.key(0), jnp.float32(0.75), image, partner)
  assert np.asarray(mixed[21, 7]).max() == 2.0  # the blob was pasted
  pasted = np.asarray(mixed[..., 0]) != 1.0
  np.testing.assert_allclose(1 - lam, pasted.mean(), atol=1e-6)
  assert 0.2 <= pasted.mean() <= 0.3  # a box of side sqrt(1 - 0.75) = half the image


def test_bad_mixup_settings_are_one_line_errors():
  with pytest.raises(ValueError, match="mixup region 'mosaic'; valid: cutmix, resizemix"):
    mixing.MixConfig.from_config({"region": "mosaic"})
  with pytest.raises(ValueError, match="unknown mixup key"):
    mixing.MixConfig.from_config({"alpha": 1.0})
  config = load_config_file("configs/cifar100_classic.py:small_cnn")
  config.task.mixup.switch_prob = 2.0
  with pytest.raises(ConfigError, match=r"^config.task.mixup: mixup switch_prob must be in \[0, 1\]"):
    validate(config, 1)


# ---- Random erasing and RandAugment (tf.data, per example) ---------------------------------------

def _seed(i):
  return tf.constant([i, 7], tf.int64)


def test_random_erasing_fraction_and_probability():
  image = tf.fill([32, 32, 3], 5.0)  # normalized images never hold 5: noise shows where it erased
  fractions = []
  for i in range(40):
    out = augment.random_erasing(image, _seed(i), probability=0.5).numpy()
    erased = (out != 5.0).all(-1)
    assert np.array_equal(erased, (out != 5.0).any(-1))  # all channels of an erased pixel
    if erased.any():
      rows, cols = np.nonzero(erased)
      assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one box
      fractions.append(erased.mean())
  assert 8 <= len(fractions) <= 32  # ~ half of 40
  # timm's area range 2%..1/3, up to rounding of the box sides.
  assert min(fractions) >= 0.015 and max(fractions) <= 0.36
  np.testing.assert_array_equal(augment.random_erasing(image, _seed(3), 0.5),
                                augment.random_erasing(image, _seed(3), 0.5))


def _photo(seed=0, size=24):
  rng = np.random.default_rng(seed)
  smooth = rng.uniform(0, 1, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1)
  return tf.constant(np.clip(smooth + 0.05 * rng.normal(size=smooth.shape), 0, 1), tf.float32)


def test_randaugment_shape_range_and_determinism():
  policy = randaugment.parse("rand-m9-mstd0.5-inc1")
  assert policy == randaugment.Policy(9.0, 2, 0.5, 10.0, True)
  image = _photo()
  outs = [randaugment.randaugment(image, _seed(i), policy).numpy() for i in range(12)]
  for out in outs:
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3)  # uint8 levels, as PIL
  np.testing.assert_array_equal(outs[0], randaugment.randaugment(image, _seed(0), policy).numpy())
  changed = sum(not np.allclose(out, np.round(image.numpy() * 255) / 255) for out in outs)
  assert changed >= 6  # 2 ops at p=0.5: ~75% of images change


def test_randaugment_ops_follow_pil_semantics():
  x = tf.constant(np.arange(0, 256, 4, dtype=np.float32).reshape(8, 8, 1).repeat(3, -1))
  sign = tf.constant(1.0)
  op = lambda name, m: randaugment.apply_op(name, x, tf.constant(m), sign, (0, 0, 0)).numpy()
  np.testing.assert_array_equal(op("Invert", 0), 255 - x.numpy())
  # SolarizeIncreasing at m=9: threshold 256 - int(0.9 * 256) = 26.
  np.testing.assert_array_equal(op("SolarizeIncreasing", 9), np.where(x >= 26, 255 - x, x))
  # PosterizeIncreasing at m=9 keeps 4 - int(3.6) = 1 bit.
  np.testing.assert_array_equal(op("PosterizeIncreasing", 9), np.where(x >= 128, 128, 0))
  np.testing.assert_array_equal(op("SolarizeAdd", 10), np.where(x < 128, np.minimum(x + 110, 255), x))
  np.testing.assert_array_equal(op("BrightnessIncreasing", 0), x)  # factor 1
  low = tf.constant(np.full((8, 8, 3), 100.0, np.float32)).numpy()
  low[0, 0] = 50
  stretched = randaugment.auto_contrast(tf.constant(low)).numpy()
  assert stretched.min() == 0 and stretched.max() == 255
  equalized = randaugment.equalize(x).numpy()
  assert len(np.unique(equalized)) == 64 and equalized.max() >= 248  # spread over the range
  np.testing.assert_array_equal(op("TranslateXRel", 0), x)  # magnitude 0: identity
  shifted = op("ShearX", 0)
  np.testing.assert_array_equal(shifted, x)
  rotated = op("Rotate", 10)  # 30 degrees: corners filled with the fill colour (0 here)
  assert rotated[0, 0, 0] == 0 and rotated.shape == (8, 8, 3)


def test_bad_randaugment_spec_and_erasing_are_one_line_config_errors():
  config = load_config_file("configs/cifar100_modern.py:small_cnn")
  config.dataset.randaugment = "rand-m9-q2"
  with pytest.raises(ConfigError, match="^config.dataset.randaugment: .*unknown part 'q2'"):
    validate(config, 1)
  config.dataset.randaugment = "rand-m9"
  config.dataset.random_erasing = -0.1
  with pytest.raises(ConfigError, match="random_erasing=-0.1 must be a probability"):
    validate(config, 1)


# ---- The recipes, end to end on mock data ----------------------------------------------------------

@pytest.mark.parametrize("recipe", ["cifar100_classic", "cifar100_modern"])
def test_cifar100_recipe_trains_end_to_end_on_mock_data(recipe, tmp_path):
  config = load_config_file(f"configs/{recipe}.py:small_cnn")
  assert config.dataset.name == "cifar100" and config.batch_size == 100
  config.batch_size = config.eval_batch_size = 8
  config.total_steps, config.log_every_steps = 2, 1
  config.eval_every_steps = config.checkpoint_every_steps = 2
  config.dataset.shuffle_buffer = 16
  with tfds.testing.mock_data(num_examples=16):
    result = trainer.train_and_evaluate(config, tmp_path / recipe)
  assert np.isfinite(result["eval/loss"]) and 0 <= result["eval/accuracy"] <= 1


def test_deit_recipe_trains_end_to_end_on_mock_data(tmp_path):
  # DeiT's pieces together (RandAugment, random erasing, Mixup/CutMix, repeated augmentation, EMA)
  # on a small model at 32x32; the recipe's ViT at 224 is too slow for a unit test on CPU.
  config = load_config_file("configs/imagenet_deit.py:small_cnn")
  assert config.dataset.repeated_augmentation == 3 and config.optim.averaging.name == "ema"
  config.dataset.image_size = 32
  config.batch_size, config.eval_batch_size = 24, 8  # 8 images x 3 copies
  config.num_epochs = None
  config.total_steps, config.log_every_steps = 2, 1
  config.eval_every_steps = config.checkpoint_every_steps = 2
  config.optim.warmup_epochs, config.optim.warmup_steps = None, 1
  config.dataset.shuffle_buffer = 16
  config.dataset.download = True  # mock_data stands in; nothing is downloaded
  config.compute_dtype = "float32"
  with tfds.testing.mock_data(num_examples=16):
    result = trainer.train_and_evaluate(config, tmp_path / "deit")
  assert np.isfinite(result["eval/loss"]) and np.isfinite(result["eval_ema/loss"])
