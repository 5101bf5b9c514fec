"""The trainer's setup in-process on 8 simulated devices: parameters really are sharded."""

import jax
import numpy as np

from jaxlab import trainer
from jaxlab.config import load_config_file


def test_fsdp8_shards_parameters_and_optimizer_state(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  config = load_config_file("configs/quickstart.py")
  config.mesh.data, config.mesh.fsdp = 1, 8
  setup = trainer.build(config)
  state = trainer.initial_state(setup)
  sharded = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    if "fsdp" in str(leaf.sharding.spec):
      shard = leaf.addressable_shards[0].data
      assert shard.size * 8 == leaf.size, jax.tree_util.keystr(path)
      sharded[jax.tree_util.keystr(path)] = leaf
  # Every parameter above the size threshold is split 8 ways; small ones stay replicated.
  big = [l for l in jax.tree.leaves(state.params) if l.size >= config.sharding.fsdp_min_size]
  assert big and len(sharded) == len(big)
  momentum = jax.tree.leaves(state.opt_state)
  assert sum("fsdp" in str(m.sharding.spec) for m in momentum if hasattr(m, "sharding")) == len(big)
  # The sharded values are the same numbers as an unsharded initialisation.
  config.mesh.data, config.mesh.fsdp = 8, 1
  replicated = trainer.initial_state(trainer.build(config))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(replicated.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
