"""Export to safetensors: the trained weights or their average, named by parameter path."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxlab import optim, trainer
from jaxlab.checkpoint import Checkpointer
from jaxlab.config import load_config_file


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = load_config_file("configs/quickstart.py")
  config.total_steps = config.checkpoint_every_steps = config.eval_every_steps = 8
  config.optim.averaging.name = "ema"
  config.optim.averaging.hparams = {"momentum": 0.5}
  trainer.train_and_evaluate(config, workdir)
  checkpointer = Checkpointer(workdir / "checkpoints", every_steps=8, keep=1)
  state = checkpointer.restore(8, trainer.build(config).abstract_state)
  checkpointer.close()
  return workdir, state


@pytest.mark.parametrize("ema", [False, True])
def test_export_writes_every_parameter(run, tmp_path, ema):
  workdir, state = run
  out = tmp_path / "model.safetensors"
  # A workdir relative to the current directory, as users type it (Orbax reads absolute paths only).
  args = [sys.executable, "-m", "jaxlab.export", f"--workdir={workdir.name}", f"--out={out}"] + (["--ema"] if ema else [])
  result = subprocess.run(args, cwd=workdir.parent, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  tensors = load_file(str(out))
  params = optim.averaged_params(state.opt_state) if ema else state.params
  flat = {".".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert set(flat) <= set(tensors) and "conv1.kernel" in tensors
  for name, value in flat.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)
  assert any(k.startswith("model_state.bn1.") for k in tensors)


def test_export_of_a_missing_run_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "jaxlab.export", f"--workdir={tmp_path}", "--out=x.safetensors"],
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2 and result.stderr.strip() == f"error: no checkpoints in '{tmp_path}'"


def test_schedule_free_run_exports_its_evaluation_point(tmp_path):
  from jaxlab.export import exported_tensors
  from jaxlab.stages import resolve_checkpoint
  config = load_config_file("configs/quickstart.py")
  config.total_steps = config.checkpoint_every_steps = config.eval_every_steps = 4
  config.optim.name, config.optim.lr = "schedule_free_adamw", 5e-3
  config.optim.hparams = {"weight_decay": 0.05}
  trainer.train_and_evaluate(config, tmp_path / "run")
  checkpointer = Checkpointer(tmp_path / "run" / "checkpoints", every_steps=4, keep=1)
  state = checkpointer.restore(4, trainer.build(config).abstract_state)
  checkpointer.close()
  x = optim.evaluation_params(state.params, state.opt_state)
  tensors = exported_tensors(resolve_checkpoint(tmp_path / "run"))
  np.testing.assert_allclose(tensors["head.kernel"], x["head"]["kernel"], rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(tensors["bn1.scale"], x["bn1"]["scale"], rtol=1e-5, atol=1e-9)  # the no-decay group
  assert not np.allclose(tensors["head.kernel"], state.params["head"]["kernel"])


@pytest.mark.parametrize("written_on, exported_on", [(8, 1), (1, 8)])
def test_export_reads_a_checkpoint_written_on_another_mesh(tmp_path, written_on, exported_on):
  """A run written on one device count (8: data, FSDP and tensor parallelism) is exported by a
  process with another; the run is rebuilt on the devices there. The tensors equal what this
  process read back right after training."""
  import cli_runner  # pylint: disable=import-outside-toplevel
  from jaxlab.export import exported_tensors  # pylint: disable=import-outside-toplevel
  config = load_config_file("configs/quickstart.py")
  config.total_steps = config.checkpoint_every_steps = config.eval_every_steps = 4
  if written_on == 8:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.sharding.fsdp_min_size = 64
  workdir = tmp_path / "run"
  trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:written_on])
  expected = exported_tensors(workdir)
  out = tmp_path / "model.safetensors"
  result = subprocess.run([sys.executable, "-m", "jaxlab.export", f"--workdir={workdir}", f"--out={out}"],
                          cwd=cli_runner.ROOT, env=cli_runner.train_env(exported_on),
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  got = load_file(out)
  assert set(got) == set(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
