"""init_from: pretrain on the digits, fine-tune on another dataset with a new stem and head."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxlab import stages, trainer
from jaxlab.checkpoint import Checkpointer
from jaxlab.config import load_config_file


def _flat(params):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pretrain")
  config = load_config_file("configs/quickstart.py")
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 10
  trainer.train_and_evaluate(config, workdir)
  setup = trainer.build(config)
  checkpointer = Checkpointer(workdir / "checkpoints", every_steps=10, keep=1)
  state = checkpointer.restore(10, setup.abstract_state)
  checkpointer.close()
  return workdir, _flat(state.params), _flat(state.model_state)


def _finetune_config(pretrain_dir, skip):
  config = load_config_file("configs/quickstart.py")
  config.dataset.name = "cifar100"  # 3 channels and 100 classes: new stem and head
  config.dataset.mean, config.dataset.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  config.batch_size, config.total_steps = 8, 2
  config.eval_every_steps = config.checkpoint_every_steps = 2
  config.init_from.path = str(pretrain_dir)
  config.init_from.skip = skip
  return config


def test_mismatches_are_listed_key_by_key(pretrained, tmp_path):
  with tfds.testing.mock_data(num_examples=16):
    config = _finetune_config(pretrained[0], skip=())
    with pytest.raises(stages.InitFromError) as error:
      trainer.train_and_evaluate(config, tmp_path / "finetune")
  message = str(error.value)
  assert "3 key(s) do not fit" in message and "\n" not in message
  for key in ("params/conv1/kernel -> params/conv1/kernel: checkpoint float32[3, 3, 1, 32], model float32[3, 3, 3, 32]",
              "params/head/kernel", "params/head/bias"):
    assert key in message
  assert not (tmp_path / "finetune").exists()  # nothing written


def test_finetune_loads_everything_but_the_skipped_keys(pretrained, tmp_path):
  pretrain_dir, params, model_state = pretrained
  with tfds.testing.mock_data(num_examples=16):
    config = _finetune_config(pretrain_dir, skip=("^params/head/", "^params/conv1/"))
    setup = trainer.build(config)
    state = stages.load(trainer.initial_state(setup), setup.abstract_state,
                        stages.plan(setup.abstract_state, config.init_from))
    trainer.train_and_evaluate(config, tmp_path / "finetune")  # and it trains from there
  loaded = _flat(state.params)
  assert loaded["['head']['kernel']"].shape == (128, 100)
  for key, value in params.items():
    if "head" in key or "conv1" in key:
      continue
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  for key, value in _flat(state.model_state).items():  # batch statistics come along
    np.testing.assert_array_equal(value, model_state[key], err_msg=key)
  assert int(state.step) == 0  # a new run: only params and model state were selected


def test_unknown_checkpoint_path_is_one_line(tmp_path):
  with pytest.raises(stages.InitFromError, match="no checkpoints in"):
    stages.resolve_checkpoint(tmp_path)


def _mesh_of(config, devices: int) -> list:
  """The first `devices` devices; on 8, data, FSDP and tensor parallelism at once."""
  if devices == 8:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.sharding.fsdp_min_size = 64
  return jax.devices()[:devices]


@pytest.mark.parametrize("written_on, loaded_on", [(8, 1), (1, 8)])
def test_init_from_reads_a_checkpoint_written_on_another_mesh(tmp_path, written_on, loaded_on):
  """Each array is read into the shards of the loading mesh and equals what the writer saved."""
  config = load_config_file("configs/quickstart.py")
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 4
  devices = _mesh_of(config, written_on)
  trainer.train_and_evaluate(config, tmp_path / "pretrain", devices=devices)
  checkpointer = Checkpointer(tmp_path / "pretrain" / "checkpoints", every_steps=4, keep=1)
  saved = checkpointer.restore(4, trainer.build(config, devices).abstract_state)
  checkpointer.close()

  config = load_config_file("configs/quickstart.py")
  config.init_from.path = str(tmp_path / "pretrain")
  devices = _mesh_of(config, loaded_on)
  setup = trainer.build(config, devices)
  state = stages.load(trainer.initial_state(setup), setup.abstract_state,
                      stages.plan(setup.abstract_state, config.init_from))
  for tree, expected in ((state.params, saved.params), (state.model_state, saved.model_state)):
    got, want = _flat(tree), _flat(expected)
    assert got.keys() == want.keys()
    for key, value in want.items():
      np.testing.assert_array_equal(got[key], value, err_msg=key)
  for leaf in jax.tree_util.tree_leaves(state.params):
    assert leaf.sharding.device_set == set(devices)
