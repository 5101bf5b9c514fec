"""The task contract is closed: a task defined here, and nowhere in jaxlab, trains, evaluates,
checkpoints, resumes, samples and exports through the public CLIs.

The toy task learns one image per class (and one for "no class", trained by label dropout), so
what it generates can be checked against the data: the sample for class c is the mean image of
class c. In the CLI subprocesses the config names it by import path
(`tests.test_task_contract:ClassMeans`); here it is also registered by name.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxlab import models, tasks
from jaxlab.config import ConfigError, load_config_file

TASK_PATH = "tests.test_task_contract:ClassMeans"
# pytest imports this file as `test_task_contract`; the import path above must find the same
# module (and not register a second copy of its task and model).
sys.modules.setdefault(TASK_PATH.partition(":")[0], sys.modules[__name__])


class ClassMeanImages(nnx.Module):
  """A learned image per class, and one more for "no class" (row `num_classes`)."""

  def __init__(self, *, num_classes, in_channels, img_size, rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    del rngs, dtype
    self.shape = (img_size, img_size, in_channels)
    self.table = nnx.Param(jnp.zeros((num_classes + 1, img_size * img_size * in_channels), param_dtype))

  def __call__(self, labels):
    return self.table[...][labels].reshape((labels.shape[0], *self.shape))


if "toy_class_means" not in models.available():  # imported once per process, but be safe
  models.register("toy_class_means")(ClassMeanImages)


@dataclasses.dataclass(frozen=True)
class ClassMeans(tasks.Task):
  """Mean squared error of the class's image to the batch's images; generates class means."""
  name = "class_means"
  abilities = frozenset({tasks.GENERATES})
  sampling_options = ("guidance",)

  label_dropout: float = 0.2
  guidance: float = 1.0

  def __post_init__(self):
    if not 0 <= self.label_dropout < 1:
      raise ValueError(f"config.task.label_dropout must be in [0, 1), got {self.label_dropout}")

  def init(self, build):
    return build(img_size=build.info.image_shape[0])

  def _errors(self, model, images, labels):
    return jnp.mean(jnp.square(model(labels) - images), axis=(1, 2, 3))

  def loss(self, model, batch, rng):
    null = model.table.shape[0] - 1
    labels = jnp.where(jax.random.bernoulli(rng, self.label_dropout, batch["label"].shape), null,
                       batch["label"])
    loss = self._errors(model, batch["image"], labels).mean()
    return loss, {"loss": loss}

  def evaluate(self, model, batch):
    errors = self._errors(model, batch["image"], batch["label"])
    return {"loss": (errors * batch["mask"]).sum(), "count": batch["mask"].sum()}

  def prepare_sampling(self, info, **options):
    tasks.base.check_options(self, options)
    guidance = options.get("guidance", self.guidance)

    def draw(model, labels, rng):
      del rng
      cond, uncond = model(labels), model(jnp.full_like(labels, info.num_classes))
      return uncond + guidance * (cond - uncond)
    return tasks.Sampling(draw, True, {"sampler": "class_means", "steps": 1, "guidance": guidance,
                                       "nfe": 1})


tasks.register(ClassMeans)

CONFIG = f'''
import ml_collections
from jaxlab import tasks
from jaxlab.config import base_config

def get_config():
  config = base_config()
  config.task = tasks.default_config("{TASK_PATH}")
  config.model = ml_collections.ConfigDict({{"name": "toy_class_means"}})
  config.dataset.augment = "none"
  config.batch_size = 64
  config.total_steps = 40
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 20
  config.optim.name, config.optim.lr, config.optim.schedule = "adam", 0.05, "constant"
  config.optim.hparams = {{}}
  config.optim.averaging.name = "ema"
  config.optim.averaging.hparams = {{"momentum": 0.5}}
  return config
'''


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("contract") / "class_means.py"
  path.write_text(textwrap.dedent(CONFIG))
  return path


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
  # Imported here: the CLI subprocesses import this module without the tests folder on their path.
  from cli_runner import ROOT, train_env  # pylint: disable=import-outside-toplevel
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=train_env(1),
                        capture_output=True, text=True, timeout=600)


def test_the_task_is_registered_and_validates_its_own_config():
  assert "class_means" in tasks.available()
  assert tasks.task_class(TASK_PATH) is ClassMeans  # the same class, by import path
  assert tasks.default_config("class_means").to_dict() == {
      "name": "class_means", "label_dropout": 0.2, "guidance": 1.0}
  config = tasks.default_config("class_means")
  config.label_dropot = 0.5
  with pytest.raises(ValueError, match=r"^unknown key\(s\) label_dropot for task 'class_means'; "
                                       r"valid: guidance, label_dropout$"):
    tasks.from_config(config)


def test_an_optimizer_that_needs_an_ability_the_task_lacks_fails_in_one_line(config_file):
  from jaxlab import trainer  # pylint: disable=import-outside-toplevel
  config = load_config_file(str(config_file))
  config.optim.name, config.optim.hparams = "sophia", {}
  with pytest.raises(ConfigError, match=r"^config.optim.name: optimizer 'sophia' needs a task with "
                                        r"sampled_loss; task 'class_means' declares generates$"):
    trainer.build(config)


def test_train_resume_sample_and_export_through_the_clis(config_file, tmp_path):
  workdir = tmp_path / "run"
  first = _cli("jaxlab.train", f"--config={config_file}", f"--workdir={workdir}")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "test loss:" in first.stdout
  resumed = _cli("jaxlab.train", f"--config={config_file}", f"--workdir={workdir}",
                 "--config.total_steps=60")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 40" in resumed.stdout + resumed.stderr
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [m["train/loss"] for m in lines if "train/loss" in m]
  assert [m["step"] for m in lines if "train/loss" in m] == [20, 40, 60]
  assert losses[0] > losses[1] > losses[2]
  assert {"eval/loss", "eval_ema/loss"} <= {k for m in lines for k in m}

  # Samples: the learned image of each class, which must be that class's mean training image.
  samples = _cli("jaxlab.sample", f"--workdir={workdir}", "--num=10", f"--out={tmp_path / 's'}")
  assert samples.returncode == 0, samples.stderr[-3000:]
  assert "class_means, 1 steps, 1 network evaluations, guidance 1" in samples.stdout
  drawn = np.load(tmp_path / "s" / "samples.npz")
  assert drawn["labels"].tolist() == list(range(10)) and drawn["images"].shape == (10, 8, 8, 1)
  from jaxlab import data  # pylint: disable=import-outside-toplevel
  config = load_config_file(str(config_file))
  images, labels = [], []
  for batch in data.eval_batches(config.dataset, local_batch_size=120, process_index=0,
                                 process_count=1):
    keep = batch["mask"] > 0
    images.append(batch["image"][keep]), labels.append(batch["label"][keep])
  images, labels = np.concatenate(images), np.concatenate(labels)
  means = np.stack([images[labels == c].mean(0) for c in range(10)])
  mean, std = np.asarray(config.dataset.mean), np.asarray(config.dataset.std)
  generated = (drawn["images"] / 255.0 - mean) / std
  distances = ((generated[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
  assert distances.argmin(1).tolist() == list(range(10))

  # One guidance convention: w = 3 reaches the task's draw (the CLI's Python entry, in process).
  from jaxlab.sample import SampleError, sample_run  # pylint: disable=import-outside-toplevel
  guided = sample_run(workdir, num=10, guidance=3.0, progress=False)
  assert guided["guidance"] == 3.0 and not np.array_equal(guided["images"], drawn["images"])
  with pytest.raises(SampleError, match=r"^a 'class_means' run takes no sampling option\(s\) eta; "
                                        r"valid: guidance$"):
    sample_run(workdir, num=4, eta=0.5)

  exported = _cli("jaxlab.export", f"--workdir={workdir}", f"--out={tmp_path / 'm.safetensors'}")
  assert exported.returncode == 0, exported.stderr[-3000:]
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  assert load_file(tmp_path / "m.safetensors")["table"].shape == (11, 64)


@pytest.mark.parametrize("name", sorted(set(tasks.available()) - {"class_means"}))
def test_every_task_rejects_an_unknown_key_in_one_line(name):
  from jaxlab.config import base_config, validate  # pylint: disable=import-outside-toplevel
  config = base_config()
  config.total_steps = 1
  config.task = tasks.default_config(name)
  tasks.from_config(config.task)  # the defaults are valid
  config.task.no_such_key = 1
  with pytest.raises(ConfigError, match=rf"^config.task: unknown key\(s\) no_such_key for task "
                                        rf"'{name}'; valid: "):
    validate(config, 1)


@pytest.mark.parametrize("written_on, sampled_on", [(8, 1), (1, 8)])
def test_sample_reads_a_run_written_on_another_mesh(config_file, tmp_path, written_on, sampled_on):
  """The samples drawn by a process with another device count equal the writer's own."""
  from jaxlab import trainer  # pylint: disable=import-outside-toplevel
  from jaxlab.sample import sample_run  # pylint: disable=import-outside-toplevel
  config = load_config_file(str(config_file))
  config.total_steps = config.checkpoint_every_steps = config.eval_every_steps = 20
  if written_on == 8:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.sharding.fsdp_min_size = 64
  trainer.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:written_on])
  expected = sample_run(tmp_path / "run", num=10, progress=False)["images"]
  from cli_runner import ROOT, train_env  # pylint: disable=import-outside-toplevel
  result = subprocess.run([sys.executable, "-m", "jaxlab.sample", f"--workdir={tmp_path / 'run'}", "--num=10",
                           f"--out={tmp_path / 's'}"], cwd=ROOT, env=train_env(sampled_on),
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_array_equal(np.load(tmp_path / "s" / "samples.npz")["images"], expected)
