"""The `diffusion` task in the unchanged trainer: config checks, formulations' predictions, a sharded
training step on 8 simulated devices, and sampling (in-process and via the CLI) from a tiny run."""

import subprocess
import sys

import chex
import cli_runner
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from jaxlab import diffusion, trainer
from jaxlab.config import ConfigError, load_config_file, validate
from jaxlab.restore import restore_run
from jaxlab.sample import SampleError, sample_run
from jaxlab.tasks.diffusion import Diffusion

# A one-block DiT: it builds and compiles about three times faster than the smallest U-Net.
TINY_DIT = {"name": "dit", "patch_size": 2, "hidden_size": 32, "depth": 1, "num_heads": 2}


def _tiny_config(**task):
  config = load_config_file("configs/diffusion_digits.py")
  config.model = ml_collections.ConfigDict(TINY_DIT)
  config.batch_size, config.total_steps = 16, 3
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.eval_batch_size = 120
  config.task.update(task)
  return config


def test_config_errors_name_the_key_in_one_line():
  config = _tiny_config(formulation="score")
  with pytest.raises(ConfigError, match=r"^config.task.formulation='score'; valid: ddpm, edm, flow$"):
    validate(config, 1)
  config = _tiny_config()
  config.task.guidence = 2.0
  with pytest.raises(ConfigError, match=r"^config.task: unknown key\(s\) guidence for task 'diffusion'; valid: "):
    validate(config, 1)
  with pytest.raises(ConfigError, match=r"label_dropout=1.0 must be in \[0, 1\)"):
    validate(_tiny_config(label_dropout=1.0), 1)


FORMULATIONS = [diffusion.EDM(), diffusion.FlowMatching(),
                *(diffusion.DDPM(diffusion.noise_schedule("squaredcos_cap_v2"), p)
                  for p in ("epsilon", "v_prediction", "sample"))]


def _oracle_network(formulation, x, oracle_x0, alpha, sigma, data_std):
  """A 'network' whose output, read through the formulation's parametrization, is `oracle_x0`."""
  eps = (x - alpha * oracle_x0) / sigma
  if isinstance(formulation, diffusion.EDM):
    c_skip = data_std**2 / (sigma**2 + data_std**2)
    c_out = sigma * data_std / np.sqrt(sigma**2 + data_std**2)
    output = (oracle_x0 - c_skip * x) / c_out
  elif isinstance(formulation, diffusion.FlowMatching):
    output = eps - oracle_x0
  else:
    output = {"epsilon": eps, "v_prediction": alpha * eps - sigma * oracle_x0,
              "sample": oracle_x0}[formulation.prediction]
  return lambda x_in, time, labels: output


@pytest.mark.parametrize("formulation", FORMULATIONS, ids=lambda f: f"{f.name}-{getattr(f, 'prediction', '')}")
def test_predictions_of_an_oracle_network_reach_the_posterior_error(formulation):
  """x0 ~ N(0, s^2): a network answering with E[x0 | x] in its formulation's parametrization has
  x0 error s^2 sigma^2 / (alpha^2 s^2 + sigma^2) at every level, and a training loss equal to that
  error times what the prediction target's error is per unit of x0 error (EDM's weight makes it 1)."""
  s, n = 0.5, 20000
  x0 = s * jax.random.normal(jax.random.key(0), (n, 1))
  noise = jax.random.normal(jax.random.key(1), (n, 1))
  for level in formulation.eval_levels:
    levels = jnp.full((n,), level)
    alpha, sigma = (float(v[0]) for v in formulation.marginal(levels))
    x = alpha * x0 + sigma * noise
    oracle_x0 = alpha * s**2 / (alpha**2 * s**2 + sigma**2) * x

    net = _oracle_network(formulation, x, oracle_x0, alpha, sigma, s)
    predicted, eps = formulation.predict(net, x, levels, None)
    expected = s**2 * sigma**2 / (alpha**2 * s**2 + sigma**2)
    assert float(jnp.mean((predicted - x0) ** 2)) == pytest.approx(expected, rel=0.05), level
    chex.assert_trees_all_close(alpha * predicted + sigma * eps, x, atol=1e-4)
    if isinstance(formulation, diffusion.EDM):
      per_x0_error = (sigma**2 + s**2) / (sigma * s) ** 2  # EDM's loss weight
    elif isinstance(formulation, diffusion.FlowMatching):
      per_x0_error = 1 / sigma**2  # v - v* = -(x0 - x0*) / t
    else:
      per_x0_error = {"epsilon": alpha**2 / sigma**2, "v_prediction": 1 / sigma**2, "sample": 1.0}[formulation.prediction]
    loss = formulation.level_loss(net, x0, None, levels, noise)
    assert float(jnp.mean(loss)) == pytest.approx(expected * per_x0_error, rel=0.05), level


def test_label_dropout_replaces_labels_with_the_null_class_at_its_rate():
  task = Diffusion.from_config(_tiny_config(label_dropout=0.3).task)
  labels = task.training_labels(jnp.full((20000,), 4), 10, jax.random.key(0))
  assert set(np.unique(labels)) == {4, 10} and float(jnp.mean(labels == 10)) == pytest.approx(0.3, abs=0.015)
  unconditional = Diffusion.from_config(_tiny_config(conditional=False).task)
  assert set(np.unique(unconditional.training_labels(jnp.arange(10), 10, jax.random.key(0)))) == {10}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """3 steps of the unchanged trainer on 8 simulated devices, data 2 x fsdp 4, with EMA."""
  config = _tiny_config()
  config.mesh.data, config.mesh.fsdp = 2, 4
  config.sharding.fsdp_min_size = 2**10
  workdir = tmp_path_factory.mktemp("diffusion")
  result = trainer.train_and_evaluate(config, workdir)
  return workdir, result


def test_training_on_8_devices_with_fsdp_reports_eval_and_ema_metrics(tiny_run):
  workdir, result = tiny_run
  assert {"eval/loss", "eval_ema/loss", "eval/mse/sigma0.1", "eval/mse/sigma3"} <= set(result)
  assert all(np.isfinite(v) for v in result.values()) and result["eval/loss"] != result["eval_ema/loss"]
  # Denoising error rises with the noise level.
  assert result["eval/mse/sigma0.1"] < result["eval/mse/sigma1"] < result["eval/mse/sigma3"]
  run = restore_run(workdir)
  assert run.step == 3 and tuple(run.setup.mesh.shape.values()) == (2, 4, 1)
  specs = [str(p.sharding.spec) for p in jax.tree.leaves(run.params)]
  assert any("fsdp" in s for s in specs)  # the larger kernels are split over fsdp


def test_sampling_in_process_on_8_devices(tiny_run):
  tiny_run = tiny_run[0]
  kw = {"num": 20, "sampler": "dpmpp_2m", "steps": 3, "ema": True, "batch": 16, "progress": False}
  a = sample_run(tiny_run, guidance=3.0, **kw)
  assert a["images"].shape == (20, 8, 8, 1) and a["images"].dtype == np.uint8 and a["nfe"] == 3
  np.testing.assert_array_equal(a["labels"], np.arange(20) % 10)
  with pytest.raises(SampleError, match="unknown sampler 'plms'; valid: ddpm, ddim, euler, heun, dpmpp_2m"):
    sample_run(tiny_run, num=4, sampler="plms")
  with pytest.raises(SampleError, match="eta is DDIM's; sampler 'heun' takes none"):
    sample_run(tiny_run, num=4, sampler="heun", eta=0.5)


def test_classifier_features_refuse_a_task_that_does_not_classify(tiny_run):
  """FD-<classifier> features need a task that declares it classifies (a diffusion net has a
  `head`-less, unrelated output)."""
  from jaxlab.metrics.features import ClassifierFeatures  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"is a 'diffusion' run; features need a classifier$"):
    ClassifierFeatures(tiny_run[0])


def test_sample_cli_writes_a_grid_and_npz(tiny_run, tmp_path):
  tiny_run = tiny_run[0]
  out = tmp_path / "samples"
  cmd = [sys.executable, "-m", "jaxlab.sample", f"--workdir={tiny_run}", "--num=10", "--sampler=heun",
         "--steps=2", "--guidance=2", "--ema", f"--out={out}"]
  proc = subprocess.run(cmd, check=False, cwd=cli_runner.ROOT, env=cli_runner.train_env(2), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "heun, 2 steps, 3 network evaluations, guidance 2" in proc.stdout
  saved = np.load(out / "samples.npz")
  assert saved["images"].shape == (10, 8, 8, 1) and saved["images"].dtype == np.uint8
  grid = tf.io.decode_png((out / "grid.png").read_bytes()).numpy()
  assert grid.shape[2] == 1 and grid.shape[1] > grid.shape[0]  # one column per class: 10 wide, 1 high
  bad = subprocess.run(cmd[:4] + ["--sampler=plms"], check=False, cwd=cli_runner.ROOT, env=cli_runner.train_env(1),
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: unknown sampler 'plms'")


def test_a_tall_sample_grid_gets_a_square_preview(tmp_path):
  from jaxlab.sample import write_grids  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).integers(0, 255, (250, 8, 8, 1), dtype=np.uint8)
  assert write_grids(tmp_path, images[:100], num_classes=10) == [tmp_path / "grid.png"]  # 10 x 10
  assert write_grids(tmp_path, images, num_classes=10) == [tmp_path / "grid.png", tmp_path / "preview.png"]
  grid = tf.io.decode_png((tmp_path / "grid.png").read_bytes()).numpy()
  preview = tf.io.decode_png((tmp_path / "preview.png").read_bytes()).numpy()
  assert grid.shape[0] > 2 * grid.shape[1]  # 25 rows of 10
  assert preview.shape[0] == preview.shape[1] == grid.shape[1]  # the first 10 rows, square
  np.testing.assert_array_equal(preview, grid[:preview.shape[0]])
