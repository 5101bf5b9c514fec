"""Mesh construction and parameter/optimizer-state sharding rules on 8 simulated devices."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxlab import sharding
from jaxlab.config import ConfigError, mesh_shape

RULES = (("conv_out", "tensor"), ("mlp", "tensor"))


def _mesh(data, fsdp, tensor):
  return sharding.make_mesh(ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor}))


def test_eight_simulated_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("config, expected", [
    ((-1, 1, 1), (8, 1, 1)), ((1, -1, 1), (1, 8, 1)), ((2, 2, 2), (2, 2, 2)), ((2, -1, 2), (2, 2, 2)),
])
def test_mesh_shape_resolves_minus_one(config, expected):
  assert mesh_shape(dict(zip(("data", "fsdp", "tensor"), config)), 8) == expected
  assert tuple(_mesh(*config).shape.values()) == expected


@pytest.mark.parametrize("config, message", [
    ((3, 1, 1), "needs 3 devices but 8 are available"),
    ((3, -1, 1), "3 does not divide 8"),
    ((-1, -1, 1), "at most one mesh axis may be -1"),
    ((0, 1, 1), "must be positive or -1"),
])
def test_mesh_that_does_not_fit_is_one_line(config, message):
  with pytest.raises(ConfigError, match=message) as e:
    mesh_shape(dict(zip(("data", "fsdp", "tensor"), config)), 8)
  assert "\n" not in str(e.value)


def test_tensor_rules_apply_where_divisible():
  mesh = _mesh(2, 2, 2)
  assert sharding.partition_spec((3, 3, 16, 32), (None, None, "conv_in", "conv_out"), mesh, RULES,
                                 fsdp_min_size=10**9) == P(None, None, None, "tensor")
  # 7 output channels do not divide over 2 tensor devices: replicated instead of failing.
  assert sharding.partition_spec((3, 3, 16, 7), (None, None, "conv_in", "conv_out"), mesh, RULES,
                                 fsdp_min_size=10**9) == P()


def test_fsdp_shards_largest_divisible_dimension_above_threshold():
  mesh = _mesh(1, 8, 1)
  # Largest dim (100) is not divisible by 8; the next largest divisible one (64) is taken.
  assert sharding.partition_spec((100, 64, 16), None, mesh, RULES, fsdp_min_size=1) == P(None, "fsdp")
  assert sharding.partition_spec((100, 64, 16), None, mesh, RULES, fsdp_min_size=10**6) == P()
  # Tensor and FSDP together on different dimensions.
  mesh = _mesh(2, 2, 2)
  assert sharding.partition_spec((64, 128), ("embed", "mlp"), mesh, RULES, fsdp_min_size=1) == P("fsdp", "tensor")


def test_opt_state_follows_params():
  mesh = _mesh(1, 8, 1)
  params = {"dense": {"kernel": jnp.zeros((64, 32)), "bias": jnp.zeros((32,))}}
  axes = {"dense": {"kernel": ("embed", "mlp"), "bias": ("mlp",)}}
  config = ml_collections.ConfigDict({"rules": RULES, "fsdp_min_size": 1000})
  shardings = sharding.params_sharding(jax.eval_shape(lambda: params), axes, mesh, config)
  assert shardings["dense"]["kernel"].spec == P("fsdp")
  assert shardings["dense"]["bias"].spec == P()
  tx = optax.adamw(1e-3)
  opt_shardings = sharding.opt_state_sharding(tx, jax.eval_shape(tx.init, params), shardings, mesh)
  adam_state = opt_shardings[0]
  assert adam_state.mu["dense"]["kernel"].spec == P("fsdp")
  assert adam_state.nu["dense"]["kernel"].spec == P("fsdp")
  assert adam_state.count.spec == P()
  placed = jax.device_put(params["dense"]["kernel"], shardings["dense"]["kernel"])
  chex.assert_shape(placed.addressable_shards[0].data, (8, 32))
