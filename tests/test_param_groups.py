"""Per-group lr factors (multipliers, layer-wise decay) and lookahead, against their definitions."""

import chex
import jax
import ml_collections
import numpy as np
import optax
import pytest

from jaxlab import config as config_lib
from jaxlab import optim

STEPS = 12


def _vit_like_params():
  rng = np.random.default_rng(0)
  shapes = {"patch_embed": {"kernel": (4, 8)}, "pos_embed": (1, 5, 8), "cls_token": (1, 1, 8),
            "blocks": {str(i): {"mlp": {"kernel": (8, 8), "bias": (8,)}} for i in range(3)},
            "norm": {"scale": (8,)}, "head": {"kernel": (8, 2), "bias": (2,)}}
  return jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _grads(params, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params) for _ in range(STEPS)]


def _run(tx, params, grads):
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_layer_decay_scales_follow_timm():
  # timm.optim.param_groups_layer_decay for a 3-block ViT: stem is layer 0, block i is layer
  # i + 1, norm and head are layer 4; lr scale = rate ** (4 - layer).
  rate = 0.5
  scales = optim.lr_scales(_vit_like_params(), layer_decay=rate,
                           layer_patterns=config_lib.base_config().optim.layer_decay_layers)
  assert scales["patch_embed/kernel"] == scales["pos_embed"] == scales["cls_token"] == rate ** 4
  for i in range(3):
    assert scales[f"blocks/{i}/mlp/kernel"] == scales[f"blocks/{i}/mlp/bias"] == rate ** (3 - i)
  assert scales["norm/scale"] == scales["head/kernel"] == 1.0


def test_layer_numbers_sort_numerically():
  params = {"blocks": {str(i): {"w": np.zeros(2, np.float32)} for i in range(12)}}
  scales = optim.lr_scales(params, layer_decay=0.5, layer_patterns=(r"^blocks/(\d+)/",))
  assert scales["blocks/10/w"] == 0.5 ** 2 and scales["blocks/2/w"] == 0.5 ** 10


def test_multiplier_equals_a_torch_param_group_with_scaled_lr():
  """SGD with momentum and L2 decay: a group with lr·m follows the same path as lr·m alone."""
  params = _vit_like_params()
  grads = _grads(params)
  hp = dict(momentum=0.9, weight_decay=1e-2, nesterov=True)
  scaled = optax.chain(optim.create("sgd", lr=0.1, **hp),
                       optim.scale_by_param_group(multipliers=(("^head/", 3.0),)))
  got, _ = _run(scaled, params, grads)
  base, _ = _run(optim.create("sgd", lr=0.1, **hp), params, grads)
  head_only = lambda t: t["head"]
  alone, _ = _run(optim.create("sgd", lr=0.3, **hp), head_only(params), [head_only(g) for g in grads])
  np.testing.assert_allclose(got["head"]["kernel"], alone["kernel"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["blocks"]["0"]["mlp"]["kernel"], base["blocks"]["0"]["mlp"]["kernel"], rtol=1e-6)
  assert not np.allclose(got["head"]["kernel"], base["head"]["kernel"])


def test_adamw_decoupled_decay_scales_with_the_group_lr():
  params = {"w": np.ones((3, 3), np.float32)}
  grads = _grads(params)
  tx = optax.chain(optim.create("adamw", lr=1e-2, weight_decay=0.1), optim.scale_by_param_group((("w", 0.25),)))
  got, _ = _run(tx, params, grads)
  alone, _ = _run(optim.create("adamw", lr=2.5e-3, weight_decay=0.1), params, grads)
  np.testing.assert_allclose(got["w"], alone["w"], rtol=1e-5)


def test_build_applies_layer_decay_and_multipliers():
  c = config_lib.base_config().optim
  c.name, c.lr, c.schedule = "sgd", 0.1, "constant"
  c.hparams = ml_collections.ConfigDict({"momentum": 0.0, "weight_decay": 0.0})
  c.layer_decay = 0.5
  c.lr_multipliers = (("^head/", 2.0),)
  tx = optim.build(c, total_steps=10).tx
  params = _vit_like_params()
  grads = jax.tree.map(np.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.allclose(updates["head"]["kernel"], -0.1 * 2.0)
  assert np.allclose(updates["norm"]["scale"], -0.1)
  assert np.allclose(updates["blocks"]["0"]["mlp"]["kernel"], -0.1 * 0.5 ** 3)
  assert np.allclose(updates["cls_token"], -0.1 * 0.5 ** 4)


def test_a_pattern_that_matches_nothing_is_one_line():
  with pytest.raises(ValueError, match="'\\^encoder/' matches no parameter") as e:
    optim.scale_by_param_group((("^encoder/", 2.0),)).init(_vit_like_params())
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="match no parameter"):
    optim.scale_by_param_group(layer_decay=0.7, layer_patterns=("^layers/",)).init(_vit_like_params())


def test_lookahead_equals_optax_lookahead():
  params = {"w": np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)}
  grads = _grads(params, seed=4)
  fast = optim.create("adam", lr=0.05, betas=(0.8, 0.9))
  ours = optax.chain(fast, optim.lookahead(sync_period=5, slow_step_size=0.3))
  reference = optax.lookahead(fast, sync_period=5, slow_step_size=0.3)
  p, state = params, ours.init(params)
  ref_p = optax.LookaheadParams.init_synced(params)
  ref_state = reference.init(ref_p)
  for t, g in enumerate(grads, start=1):
    updates, state = ours.update(g, state, p)
    p = optax.apply_updates(p, updates)
    ref_updates, ref_state = reference.update(g, ref_state, ref_p)
    ref_p = optax.apply_updates(ref_p, ref_updates)
    np.testing.assert_allclose(p["w"], ref_p.fast["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optim.averaged_params(state)["w"], ref_p.slow["w"], rtol=1e-5, atol=1e-6)
    if t % 5:
      assert not np.allclose(p["w"], ref_p.slow["w"])


def test_lamb_clips_by_the_norm_over_both_weight_decay_groups():
  """timm's Lamb divides every gradient by max(global norm / max_grad_norm, 1) over all groups."""
  c = config_lib.base_config().optim
  c.name, c.lr, c.schedule = "lamb", 1e-2, "constant"
  c.hparams = ml_collections.ConfigDict({"weight_decay": 0.1, "max_grad_norm": 1.0})
  tx = optim.build(c, total_steps=10).tx
  params = _vit_like_params()
  grads = [jax.tree.map(lambda g: 5 * g, g) for g in _grads(params)]  # global norm far above 1
  got, _ = _run(tx, params, grads)
  # Reference: clip globally first, then Lamb per group (no clipping inside), decay on >=2-D only.
  labels = optim.weight_decay_labels(params, c.weight_decay_exclude)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.partition(
      {"decay": optim.create("lamb", lr=1e-2, weight_decay=0.1, max_grad_norm=None),
       "no_decay": optim.create("lamb", lr=1e-2, weight_decay=0.0, max_grad_norm=None)}, labels))
  want, _ = _run(reference, params, grads)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)
  per_group, _ = _run(optax.partition(
      {"decay": optim.create("lamb", lr=1e-2, weight_decay=0.1),
       "no_decay": optim.create("lamb", lr=1e-2, weight_decay=0.0)}, labels), params, grads)
  assert not np.allclose(got["head"]["bias"], per_group["head"]["bias"], rtol=1e-4)
