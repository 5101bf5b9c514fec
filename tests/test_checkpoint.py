"""Checkpoints written under one mesh restore under another, each array in its target sharding."""

import json

import chex
import jax
import numpy as np
import pytest

from jaxlab import trainer
from jaxlab.checkpoint import Checkpointer, saved_run_info
from jaxlab.config import load_config_file

MESHES = {"fsdp8": (1, 8, 1), "data8": (8, 1, 1), "2x2x2": (2, 2, 2), "one_device": (1, 1, 1)}


def _setup(mesh):
  config = load_config_file("configs/quickstart.py")
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = MESHES[mesh]
  config.optim.averaging.name = "ema"  # the average is restored and sharded like the params too
  config.optim.averaging.hparams = {"momentum": 0.9}
  config.sharding.fsdp_min_size = 1024
  devices = jax.devices()[:1] if mesh == "one_device" else None
  return config, trainer.build(config, devices)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A state trained 3 steps under fsdp=8 and saved."""
  directory = tmp_path_factory.mktemp("ckpt")
  config, setup = _setup("fsdp8")
  state = trainer.initial_state(setup)
  train_step, _ = trainer.compile_steps(setup)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {"image": rng.normal(size=(config.batch_size, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 10, config.batch_size).astype(np.int32)}
    state, _ = train_step(state, trainer.to_global(batch, setup.batch_sharding))
  checkpointer = Checkpointer(directory / "checkpoints", every_steps=1, keep=2)
  checkpointer.maybe_save(3, state)
  checkpointer.close()
  assert any("fsdp" in str(l.sharding.spec) for l in jax.tree.leaves(state.params))
  return directory / "checkpoints", jax.tree.map(np.asarray, state)


@pytest.mark.parametrize("mesh", ["data8", "2x2x2", "one_device", "fsdp8"])
def test_restore_onto_another_mesh(saved, mesh):
  directory, expected = saved
  _, setup = _setup(mesh)
  checkpointer = Checkpointer(directory, every_steps=1, keep=2)
  restored = checkpointer.restore(checkpointer.latest_step(), setup.abstract_state)
  checkpointer.close()
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, restored), expected)
  for leaf, target in zip(jax.tree.leaves(restored), jax.tree.leaves(setup.abstract_state)):
    assert leaf.sharding.is_equivalent_to(target.sharding, leaf.ndim)
  if mesh == "2x2x2":  # tensor rules apply on this mesh: some kernels are split over `tensor`
    assert any("tensor" in str(l.sharding.spec) for l in jax.tree.leaves(restored.params))


def _short_run_config(total_steps):
  config = load_config_file("configs/quickstart.py")
  config.total_steps, config.checkpoint_every_steps, config.keep_checkpoints = total_steps, 10, 5
  config.log_every_steps, config.eval_every_steps = 10, total_steps
  return config


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_checkpoint_is_named_set_aside_and_the_previous_one_used(tmp_path, capsys, damage):
  trainer.train_and_evaluate(_short_run_config(30), tmp_path)
  files = [p for p in (tmp_path / "checkpoints" / "30").rglob("*") if p.is_file() and p.stat().st_size > 0]
  data_files = [p for p in files if "ocdbt" in str(p) and "/d/" in str(p)]
  assert data_files, files
  for path in data_files:
    if damage == "truncate":
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
      path.unlink()
  capsys.readouterr()
  trainer.train_and_evaluate(_short_run_config(40), tmp_path)
  out, err = capsys.readouterr()
  assert f"checkpoint {tmp_path / 'checkpoints' / '30'} is damaged" in err, err
  assert "resumed from step 20" in out + err
  assert (tmp_path / "checkpoints" / "damaged-30").is_dir()  # kept, not deleted
  assert (tmp_path / "checkpoints" / "40").is_dir()


def test_best_checkpoint_follows_the_metric(tmp_path):
  from jaxlab.metrics.writers import read_jsonl  # pylint: disable=import-outside-toplevel
  config = _short_run_config(40)
  config.eval_every_steps = 5
  # "Best" = highest eval loss: the early evals win, so keeping the last one would fail this.
  config.checkpoint_best.metric, config.checkpoint_best.mode = "eval/loss", "max"
  trainer.train_and_evaluate(config, tmp_path)
  evals = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "eval/loss" in r]
  best = max(evals, key=lambda r: r["eval/loss"])
  assert best["step"] < evals[-1]["step"]
  record = __import__("json").loads((tmp_path / "best_checkpoint" / "best.json").read_text())
  assert record == {"step": best["step"], "metric": "eval/loss", "value": best["eval/loss"]}
  assert sorted(p.name for p in (tmp_path / "best_checkpoint").iterdir() if p.name.isdigit()) == [str(best["step"])]
  checkpointer = Checkpointer(tmp_path / "best_checkpoint", every_steps=1, keep=1)
  restored = checkpointer.restore(best["step"], trainer.build(config).abstract_state)
  checkpointer.close()
  assert int(restored.step) == best["step"]
  # Every checkpoint carries the run's resolved config and where the data stream goes on.
  expected = json.loads(config.to_json_best_effort())
  for step_dir in (tmp_path / "best_checkpoint" / str(best["step"]), tmp_path / "checkpoints" / "40"):
    info = saved_run_info(step_dir)
    assert info["config"] == expected
    assert info["data_position"] == {"seed": config.seed, "batch_size": config.batch_size,
                                     "next_batch": int(step_dir.name)}


def test_a_save_cut_short_by_a_crash_is_never_resumed_from(tmp_path, capsys):
  """What a crash mid-save leaves (Orbax's temporary directory, never renamed) is ignored."""
  import shutil  # pylint: disable=import-outside-toplevel
  trainer.train_and_evaluate(_short_run_config(30), tmp_path)
  root = tmp_path / "checkpoints"
  partial = root / "40.orbax-checkpoint-tmp-1795430000000000"
  shutil.copytree(root / "30", partial)
  next(p for p in partial.rglob("*") if p.is_file() and "/d/" in str(p)).unlink()  # half written
  capsys.readouterr()
  trainer.train_and_evaluate(_short_run_config(40), tmp_path)
  out, err = capsys.readouterr()
  assert "resumed from step 30" in out + err and "damaged" not in err
  assert (root / "40").is_dir()
