"""A timm checkpoint from a config: `config.init_from.path` names a weights file.

The worked example configs/finetune_timm.py (convnext_tiny → the 1-channel digits) runs through the
CLI with synthetic timm weights of tests/timm_reference (numpy, no download, no torch): resnet18's,
which exercise batch statistics as well and compile in a third of convnext_tiny's time.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from timm_reference.synthetic import synthetic_state_dict

from cli_runner import run
from jaxlab import models
from jaxlab.convert import timm as timm_convert
from jaxlab.export import exported_tensors

FIXTURES = pathlib.Path(__file__).parent / "timm_reference" / "fixtures"


def _weights(name: str, path: pathlib.Path) -> dict[str, np.ndarray]:
  state_dict = synthetic_state_dict(json.loads((FIXTURES / f"{name}.json").read_text())["state_dict"])
  save_file(state_dict, str(path))
  return state_dict


def test_rgb_filters_are_adapted_as_timm_does():
  """Transcribed from timm/models/_manipulate.py, `adapt_input_conv`: 1 channel gets the sum over
  the RGB filters; C channels get the filters repeated (R, G, B, R, ...), cut to C and scaled by 3/C."""
  rgb = np.random.default_rng(0).standard_normal((3, 3, 3, 8)).astype(np.float32)  # (kh, kw, I, O)
  np.testing.assert_allclose(timm_convert.adapt_input_channels(rgb, 1), rgb.sum(2, keepdims=True), rtol=1e-6)
  four = timm_convert.adapt_input_channels(rgb, 4)
  np.testing.assert_allclose(four, np.concatenate([rgb, rgb[:, :, :1]], 2) * 0.75, rtol=1e-6)
  two = timm_convert.adapt_input_channels(rgb, 2)
  np.testing.assert_allclose(two, rgb[:, :, :2] * 1.5, rtol=1e-6)


def test_finetune_timm_config_loads_the_file_then_trains(tmp_path, tfds_data_dir):
  """With lr 0 the trained step equals the loaded weights: every array from the file (the stem's
  RGB filters summed to 1 channel, batch statistics too), except the 1000-class head, which starts
  fresh for 10 classes."""
  weights = tmp_path / "resnet18.safetensors"
  state_dict = _weights("resnet18", weights)
  code, out, err = run("configs/finetune_timm.py", tmp_path / "run", "--config.model.name=resnet18",
                       f"--config.init_from.path={weights}",
                       "--config.total_steps=1", "--config.optim.lr=0", "--config.optim.warmup_steps=0",
                       "--config.batch_size=8", "--config.eval_batch_size=120",
                       "--config.checkpoint_every_steps=1", data_dir=tfds_data_dir)
  assert code == 0, err[-3000:]
  assert "checkpoint head has 1000 classes, the model 10: head weights skipped" in err
  assert "RGB filters adapted as timm does: conv1.weight (1 input channels from 3)" in err
  model = nnx.eval_shape(lambda: models.create("resnet18", num_classes=10, in_chans=1))
  expected = {".".join(map(str, path)): value
              for path, value in timm_convert.timm_values(model, state_dict, name="resnet18").items()}
  assert f"initialised {len(expected)} arrays from {weights}" in err + out
  assert "test accuracy:" in out

  trained = exported_tensors(tmp_path / "run")
  params = {k: v for k, v in expected.items() if not k.endswith((".mean", ".var"))}
  assert "bn1.mean" in expected and "model_state.bn1.mean" in trained  # statistics: counted above
  assert set(params) == {k for k in trained if not k.startswith("model_state.")} - {"fc.kernel", "fc.bias"}
  for name, value in params.items():  # one train step moves only the statistics (momentum)
    np.testing.assert_array_equal(trained[name], value, err_msg=name)
  np.testing.assert_allclose(trained["conv1.kernel"],
                             state_dict["conv1.weight"].transpose(2, 3, 1, 0).sum(2, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("name, expected", [
    ("resnet18", "error: init_from cannot load"),
    (None, "error: config.init_from.path: '"),
    ("damaged", "error: init_from "),
])
def test_a_weights_file_that_does_not_fit_is_one_line(tmp_path, tfds_data_dir, name, expected):
  if name is None:  # a file that is not a weights file
    path = tmp_path / "notes.txt"
    path.write_text("not weights")
  elif name == "damaged":  # cut short
    path = tmp_path / "cut.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    expected += f"{path} cannot be read ("
  else:  # another architecture's weights
    path = tmp_path / f"{name}.safetensors"
    _weights(name, path)
  code, out, err = run("configs/quickstart.py", tmp_path / "run", f"--config.init_from.path={path}",
                       data_dir=tfds_data_dir)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), err[-3000:]
  assert not (tmp_path / "run").exists()
