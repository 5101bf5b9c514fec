"""Transformer and MetaFormer backbones: ViT/DeiT, Mixer, Swin, IdentityFormer ... CAFormer.

Reference numbers (parameter counts, logits) come from timm via the fixtures that
tests/timm_reference/make_fixtures_vit.py writes (timm 1.0, torch 2.x, random weights, no
download); torch and timm are not needed here. Big models are only shape-evaluated
(`nnx.eval_shape`); real forward passes run at 32x32 (CIFAR forms) or, for weight import, at 224
with batch 2.
"""

import functools
import json
import os
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from safetensors.numpy import save_file
from timm_reference.synthetic import synthetic_images
from timm_reference.synthetic_vit import synthetic_state_dict

from jaxlab import models, sharding
from jaxlab.convert import timm as timm_convert
from jaxlab.models.backbones import swin, vit
from jaxlab.state import ModelGraph

FIXTURES = pathlib.Path(__file__).parent / "timm_reference" / "fixtures"
NAMES = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
         "deit_small_patch16_224", "mixer_s16_224", "swin_tiny_patch4_window7_224",
         "identityformer_s12", "poolformerv2_s12", "convformer_s12", "convformer_s18",
         "caformer_s12", "caformer_s18", "attentionformer_s12")
# Weight import at 224 for one model per distinct architecture (CPU time): vit_small/base and
# deit_small are vit_tiny at other widths (their parameter counts are checked against timm's below),
# convformer/caformer_s18 and attentionformer_s12 are made of caformer_s12's and poolformerv2_s12's
# layers; identityformer_s12 is poolformerv2_s12 without the pooling. JAXLAB_TEST_ALL_IMPORTS=1
# checks all thirteen (about 2 minutes more).
IMPORTED = ("vit_tiny_patch16_224", "mixer_s16_224", "swin_tiny_patch4_window7_224",
            "poolformerv2_s12", "caformer_s12")
if os.environ.get("JAXLAB_TEST_ALL_IMPORTS"):
  IMPORTED = NAMES


def _key(seed=0):
  # rbg keys: initializers compile about twice as fast as with threefry.
  return jax.random.key(seed, impl="rbg")


@functools.cache
def _fixture(name):
  info = json.loads((FIXTURES / f"{name}.json").read_text())
  return info, np.load(FIXTURES / f"{name}.npz")["logits"]


def _param_count(name, num_classes=1000, **kwargs):
  model = nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, rngs=nnx.Rngs(0),
                                               **kwargs))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _checkpoint(name, tmp_path):
  """The fixture's synthetic timm weights as a .safetensors file."""
  info, _ = _fixture(name)
  path = tmp_path / f"{name}.safetensors"
  save_file(synthetic_state_dict(info["state_dict"]), str(path))
  return path


def _relative_error(actual, expected):
  return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def test_all_registered():
  assert set(NAMES) <= set(models.available())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_timm(name):
  # timm's count for its models; for the MetaFormer S12 names timm lacks, timm's MetaFormer class
  # built with the authors' definitions (see jaxlab/models/backbones/metaformer.py).
  info, _ = _fixture(name)
  assert _param_count(name) == info["param_count"]


def test_parameter_count_follows_img_size():
  # timm's vit_tiny_patch16_224(img_size=64): 16 patches + class token in the position embedding.
  info, _ = _fixture("vit_tiny_patch16_224_img64")
  assert _param_count("vit_tiny_patch16_224", img_size=64) == info["param_count"] == 5_682_856


@pytest.mark.parametrize("name", NAMES)
def test_every_param_has_logical_axes(name):
  model = nnx.eval_shape(lambda: models.create(name, num_classes=10, rngs=nnx.Rngs(0)))
  for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    axes = param.get_metadata().get("out_sharding")
    assert isinstance(axes, tuple) and len(axes) == param.ndim, (path, axes)
  # The attention projections carry the names tensor-parallel rules select.
  named = {axes for _, p in nnx.to_flat_state(nnx.state(model, nnx.Param))
           if (axes := p.get_metadata().get("out_sharding"))}
  if name.startswith(("vit", "deit", "swin", "caformer", "attentionformer")):
    assert {("embed", "qkv"), ("heads", "embed")} <= named


@pytest.mark.parametrize("name", NAMES)
def test_cifar_form_output_shape(name):
  def forward(x):
    model = models.create(name, num_classes=100, rngs=nnx.Rngs(0), cifar=True,
                          dtype=jnp.bfloat16)
    model.eval()
    return model(x)
  logits = jax.eval_shape(forward, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  chex.assert_shape(logits, (2, 100))
  assert logits.dtype == jnp.float32  # float32 logits from bfloat16 compute


@pytest.mark.parametrize("name", IMPORTED + ("vit_tiny_patch16_224_img64",))
def test_timm_weights_give_timm_logits(name, tmp_path):
  info, expected = _fixture(name)
  model_name, kwargs = name, {}
  if name.endswith("_img64"):  # the 224 checkpoint in a 64x64 model: position embeddings resampled
    model_name, kwargs = name.removesuffix("_img64"), {"img_size": 64}
  checkpoint = _checkpoint(model_name, tmp_path)
  model = models.create(model_name, num_classes=1000, rngs=nnx.Rngs(_key()),
                        pretrained=checkpoint, **kwargs)
  model.eval()
  images = synthetic_images(info["seed"], info["batch"], info["image_size"])
  logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images))
  assert _relative_error(logits, expected) < 1e-3


def test_vit_checkpoint_needs_no_resampling_at_its_own_size():
  pos_embed = np.random.default_rng(0).standard_normal((1, 1 + 14 * 14, 8)).astype(np.float32)
  assert vit.resample_pos_embed(pos_embed, (14, 14)) is pos_embed
  resized = vit.resample_pos_embed(pos_embed, (7, 5))
  chex.assert_shape(resized, (1, 1 + 7 * 5, 8))
  np.testing.assert_array_equal(resized[:, 0], pos_embed[:, 0])  # the class token's is kept


def test_metaformer_mlp_head_import_with_other_num_classes(tmp_path, capsys):
  weights = synthetic_state_dict(_fixture("caformer_s12")[0]["state_dict"])
  model = nnx.eval_shape(lambda: models.create("caformer_s12", num_classes=10, rngs=nnx.Rngs(0)))
  timm_convert.load_pretrained(model, _checkpoint("caformer_s12", tmp_path), name="caformer_s12")
  assert "head weights skipped" in capsys.readouterr().err
  # Only the class-sized layer (head.fc.fc2) keeps its initialisation; the MLP head's fc1 is loaded.
  np.testing.assert_array_equal(model.head.fc.fc1.kernel[...], weights["head.fc.fc1.weight"].T)
  assert isinstance(model.head.fc.fc2.kernel.get_value(), jax.ShapeDtypeStruct)  # not loaded
  chex.assert_shape(model.head.fc.fc2.kernel.get_value(), (2048, 10))
  np.testing.assert_array_equal(model.stages[2].blocks[0].token_mixer.qkv.kernel[...],
                                weights["stages.2.blocks.0.token_mixer.qkv.weight"].T)


def test_swin_bias_table_for_a_smaller_window_is_the_centre_crop():
  table = np.arange(13 * 13 * 2, dtype=np.float32).reshape(13 * 13, 2)  # window 7, 2 heads
  cropped = swin.resize_bias_table(table, (4, 4))
  np.testing.assert_array_equal(cropped.reshape(7, 7, 2), table.reshape(13, 13, 2)[3:10, 3:10])
  # Same relative offset, same bias: offset (dy, dx) sits at (dy + w - 1, dx + w - 1).
  big, small = swin.relative_position_index((7, 7)), swin.relative_position_index((4, 4))
  assert table[big[0, 8], 0] == cropped[small[0, 5], 0]  # tokens (0,0)->(1,1): offset (-1, -1)


def test_swin_checkpoint_loads_into_smaller_windows(tmp_path):
  # At 64x64 the last two stages see 4x4 and 2x2 maps: their windows shrink, and so do their tables.
  # Loaded into the abstract model (no initialisation, which costs seconds): every value is set.
  model = nnx.eval_shape(lambda: models.create(
      "swin_tiny_patch4_window7_224", num_classes=1000, rngs=nnx.Rngs(0), img_size=64,
      drop_path_rate=0.0))
  timm_convert.load_pretrained(model, _checkpoint("swin_tiny_patch4_window7_224", tmp_path),
                               name="swin_tiny_patch4_window7_224")
  weights = synthetic_state_dict(_fixture("swin_tiny_patch4_window7_224")[0]["state_dict"])
  table = model.layers[3].blocks[0].attn.relative_position_bias_table[...]
  chex.assert_shape(table, (3 * 3, 24))
  expected = weights["layers.3.blocks.0.attn.relative_position_bias_table"].reshape(13, 13, 24)
  np.testing.assert_array_equal(table.reshape(3, 3, 24), expected[5:8, 5:8])


def test_swin_shift_mask_separates_rolled_regions():
  mask = swin.shifted_window_mask((8, 8), (4, 4), (2, 2))
  chex.assert_shape(mask, (4, 16, 16))
  assert np.all(mask[0] == 0)  # the top-left window holds one region of the rolled map
  # In the bottom-right window, tokens from the four wrapped-around corners must not attend across.
  assert set(np.unique(mask[3])) == {0.0, swin.MASKED}
  np.testing.assert_array_equal(mask, np.swapaxes(mask, 1, 2))


def _cross_entropy_step(graph, tx):
  @jax.jit
  def step(params, model_state, opt_state, images, labels, rng):
    def loss_fn(p):
      logits = graph.merge(p, model_state, train=True, rng=rng)(images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


# ViT-Ti and the study's AttentionFormer (attention in every stage); CIFAR forms.
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "attentionformer_s12"])
def test_train_step_lowers_the_loss(name):
  model = models.create(name, num_classes=10, rngs=nnx.Rngs(_key()), cifar=True)
  graph = ModelGraph.of(model)
  params, model_state = graph.state_of(model)
  tx = optax.adamw(1e-4)
  opt_state = tx.init(params)
  step = _cross_entropy_step(graph, tx)
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  labels = jnp.arange(4) % 10
  losses = []
  for i in range(2):  # the same batch twice: one update must lower its loss
    params, opt_state, loss = step(params, model_state, opt_state, images, labels,
                                   jax.random.PRNGKey(i))
    losses.append(float(loss))
  assert np.isfinite(losses[0]) and losses[1] < losses[0]


def test_drop_path_is_random_in_train_mode_and_off_in_eval_mode():
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  dropped = models.create("identityformer_s12", num_classes=10, rngs=nnx.Rngs(_key()), cifar=True,
                          drop_path_rate=0.5)
  plain = models.create("identityformer_s12", num_classes=10, rngs=nnx.Rngs(_key()), cifar=True)
  graph, plain_graph = ModelGraph.of(dropped), ModelGraph.of(plain)
  params, model_state = graph.state_of(dropped)

  @jax.jit
  def forwards():
    rng = jax.random.PRNGKey
    train_a = graph.merge(params, model_state, train=True, rng=rng(0))(x)
    train_b = graph.merge(params, model_state, train=True, rng=rng(1))(x)
    evaluated = graph.merge(params, model_state, train=False, rng=rng(0))(x)
    # The same weights in a graph without stochastic depth, in train mode.
    without = plain_graph.merge(params, model_state, train=True, rng=rng(2))(x)
    return train_a, train_b, evaluated, without

  train_a, train_b, evaluated, without = forwards()
  assert not np.allclose(train_a, train_b)  # a fresh stochastic-depth draw per rng
  assert not np.allclose(train_a, evaluated)
  # Eval mode is the network without stochastic depth.
  np.testing.assert_allclose(evaluated, without, rtol=1e-5, atol=1e-5)


def test_sharded_forward_on_eight_devices_matches_one_device():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))
  config = ml_collections.ConfigDict({
      "rules": (("qkv", "tensor"), ("heads", "tensor"), ("mlp", "tensor")),
      "fsdp_min_size": 2**14})
  model = models.create("vit_tiny_patch16_224", num_classes=10, rngs=nnx.Rngs(_key()), cifar=True)
  graph = ModelGraph.of(model)
  params, model_state = graph.state_of(model)
  _, param_state, _ = nnx.split(model, nnx.Param, ...)
  shardings = sharding.params_sharding(jax.eval_shape(lambda: params),
                                       sharding.logical_axes(param_state), mesh, config)
  specs = sharding.describe(shardings)
  # Tensor parallelism splits the fused qkv outputs, the heads entering proj and the MLP hidden
  # features; FSDP takes another dimension of the larger matrices.
  assert specs["['blocks'][0]['attn']['qkv']['kernel']"] == str(P("fsdp", "tensor"))
  assert specs["['blocks'][0]['attn']['proj']['kernel']"] == str(P("tensor", "fsdp"))
  assert specs["['blocks'][0]['mlp']['fc2']['kernel']"] == str(P("tensor", "fsdp"))

  def forward(p, images):
    return graph.merge(p, model_state, train=False)(images)

  images = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
  expected = jax.jit(forward)(params, images)
  placed = jax.device_put(params, shardings)
  batch = jax.device_put(images, sharding.batch_sharding(mesh))
  logits = jax.jit(forward, out_shardings=sharding.replicated(mesh))(placed, batch)
  assert placed["blocks"][0]["attn"]["qkv"]["kernel"].addressable_shards[0].data.shape == (96, 288)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
