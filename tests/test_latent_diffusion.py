"""Latent diffusion on a frozen tokenizer: the stage-1 autoencoder restored with init_from, kept
frozen and stored once, the formulation run on its latents, samples decoded to images; the
ImageNet-256 DiT recipe builds and trains a step at a tiny resolution."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from checkpointed_state import flat_arrays, restore
from flax import nnx
from flax.traverse_util import flatten_dict

from jaxlab import data, optim, steps, tasks, trainer
from jaxlab.checkpoint import Checkpointer
from jaxlab.config import ConfigError, load_config_file, validate
from jaxlab.sample import sample_run
from jaxlab.state import ModelGraph, TrainState

TINY_DIT = {"name": "dit", "patch_size": 1, "hidden_size": 16, "depth": 1, "num_heads": 2, "learn_sigma": False}


def _tokenizer_config():
  config = load_config_file("configs/tokenizer_digits.py:vqvae")
  config.model.channels, config.model.latent_dim = (8, 16), 8  # 8x8 digits -> 4x4x8 latents
  config.model.quantizer.codebook_size = 16
  config.seed = 7  # not the stage-2 run's seed: copied arrays differ from freshly initialised ones
  return config


def _latent_config(tokenizer_dir, tokenizer_config):
  config = load_config_file(f"configs/latent_diffusion_digits.py:{tokenizer_dir}")
  config.task.autoencoder = ml_collections.ConfigDict(tokenizer_config.model.to_dict())
  config.model = ml_collections.ConfigDict(TINY_DIT)
  config.batch_size, config.total_steps, config.eval_batch_size = 16, 3, 120
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  return config


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
  """A stage-1 checkpoint (step 3) of the tokenizer task; its training is tested elsewhere."""
  workdir = tmp_path_factory.mktemp("tokenizer")
  config = _tokenizer_config()
  validate(config, jax.device_count())
  state = trainer.initial_state(trainer.build(config))
  checkpointer = Checkpointer(workdir / "checkpoints", every_steps=1, keep=1)
  checkpointer.maybe_save(3, state, force=True)
  checkpointer.close()
  return workdir, config, state


@pytest.fixture(scope="module")
def latent_run(tokenizer_run, tmp_path_factory):
  """3 steps of latent diffusion on 8 simulated devices (data 8), with EMA of the weights."""
  workdir = tmp_path_factory.mktemp("latent_diffusion")
  config = _latent_config(*tokenizer_run[:2])
  validate(config, jax.device_count())
  result = trainer.train_and_evaluate(config, workdir)
  return workdir, config, result


def test_frozen_autoencoder_comes_from_stage1_and_is_not_trained(tokenizer_run, latent_run):
  stage1 = tokenizer_run[2]
  workdir, config, result = latent_run
  assert {"eval/loss", "eval_ema/loss", "eval/mse/sigma0.1"} <= set(result)
  assert all(np.isfinite(v) for v in result.values())
  expected = {**flat_arrays(stage1.params["autoencoder"]), **flat_arrays(stage1.model_state["autoencoder"])}
  state = restore(workdir, config, 3)
  frozen = flat_arrays(state.model_state["autoencoder"])
  # init_from copied every stage-1 array, and three training steps left them bit-identical ...
  assert set(frozen) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(frozen[key], value, err_msg=key)
  # ... because they are model state only: not params, not in the optimizer state, not averaged.
  assert set(state.params) == {"denoiser"} and state.averaged_model_state is None
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
  assert paths and not any("autoencoder" in p for p in paths)
  # The latent scale was estimated on the first batch and kept (LDM's scale_by_std).
  assert float(state.model_state["latent_scale"]) > 0


def test_checkpoint_stores_the_autoencoder_once(tokenizer_run, latent_run):
  stage1 = tokenizer_run[2]
  workdir = latent_run[0]
  metadata = ocp.PyTreeCheckpointer().metadata(workdir / "checkpoints" / "3" / "default").item_metadata.tree
  keys = ["/".join(k) for k in flatten_dict(metadata)]
  autoencoder_keys = [k for k in keys if "autoencoder" in k]
  assert autoencoder_keys and all(k.startswith("model_state/autoencoder/") for k in autoencoder_keys)
  assert len(autoencoder_keys) == len(flat_arrays(stage1.params["autoencoder"])) + len(flat_arrays(stage1.model_state["autoencoder"]))


@dataclasses.dataclass(frozen=True)
class _RecordingFormulation:
  """Delegates to a formulation and records the shape of the data its loss sees."""
  inner: object
  seen: list

  def loss(self, net, x0, labels, rng):
    self.seen.append((x0.shape, x0.dtype))
    return self.inner.loss(net, x0, labels, rng)


def test_sampling_returns_decoded_images(latent_run):
  workdir = latent_run[0]
  out = sample_run(workdir, num=8, sampler="euler", steps=2, guidance=2.0, ema=True, batch=8, progress=False)
  # Images of the dataset's shape (the latents are 4x4x8), decoded by the frozen decoder.
  assert out["images"].shape == (8, 8, 8, 1) and out["images"].dtype == np.uint8
  assert out["nfe"] == 2 and np.isfinite(out["samples"]).all() and out["images"].std() > 0


def test_misconfigured_autoencoder_gives_one_clear_line(tokenizer_run):
  config = _latent_config(*tokenizer_run[:2])
  config.task.autoencoder.name = "vq_autoencodr"
  with pytest.raises(ConfigError, match=r"^config.task.autoencoder: unknown model 'vq_autoencodr'; valid: .*vq_autoencoder"):
    validate(config, 1)
  config = _latent_config(*tokenizer_run[:2])
  config.task.autoencoder.chanels = (8, 16)
  with pytest.raises(ConfigError, match=r"^config.task.autoencoder: unknown keyword\(s\) chanels for model 'vq_autoencoder'"):
    validate(config, 1)
  config = _latent_config(*tokenizer_run[:2])
  config.task.autoencoder = ml_collections.ConfigDict({"name": "titok", "image_size": 8, "patch_size": 2, "width": 16,
                                                       "depth": 1, "num_heads": 2, "num_latent_tokens": 4})
  with pytest.raises(ValueError, match=r"^task.autoencoder 'titok' has no latents or decode_latents method"):
    trainer.build(config)
  config = _latent_config(*tokenizer_run[:2])
  config.optim.averaging.average_model_state = True
  with pytest.raises(ConfigError, match=r"^config.optim.averaging.average_model_state=True would average a second copy of the model's frozen"):
    trainer.build(config)


def _imagenet_info(config, size):
  return data.DatasetInfo(config.dataset.name, 1000, (size, size, 3), 1_281_167, 50_000, "train",
                          config.dataset.eval_split)


def test_imagenet256_dit_config_builds_dit_xl_2_on_f8_latents():
  assert load_config_file("configs/imagenet256_dit.py:workdirs/vq_f8_in256").init_from.path == "workdirs/vq_f8_in256"
  config = load_config_file("configs/imagenet256_dit.py")  # validate checks that init_from.path exists
  validate(config, 8)
  task = tasks.from_config(config.task)
  info = _imagenet_info(config, 256)
  model = nnx.eval_shape(lambda: tasks.make_model(task, config.model, info, config.compute_dtype,
                                                  jax.random.PRNGKey(0)))
  assert model.latent_shape == (32, 32, 4)  # as the paper's SD-VAE latents
  params = sum(x.size for x in jax.tree.leaves(nnx.state(model.denoiser, nnx.Param)))
  assert params == pytest.approx(675e6, rel=0.01)  # DiT-XL/2 (the paper: 675M)
  assert not jax.tree.leaves(nnx.state(model.autoencoder, nnx.Param))  # frozen: no trained arrays
  stage1 = load_config_file("configs/vq_f8_imagenet256.py")
  validate(stage1, 8)
  assert config.task.autoencoder.to_dict() == stage1.model.to_dict()


def test_imagenet256_dit_recipe_trains_a_step_on_scaled_latents_at_tiny_resolution():
  """The same config with a tiny f8 autoencoder and DiT on 16x16 images: one train step, whose
  loss sees the 2x2x4 latents, scaled to unit variance; the autoencoder is left as it was."""
  config = load_config_file("configs/imagenet256_dit.py")
  config.task.autoencoder.channels, config.task.autoencoder.num_res_blocks = (8, 8, 8, 8), 1
  config.task.autoencoder.quantizer.codebook_size = 32
  config.model = ml_collections.ConfigDict({**TINY_DIT, "patch_size": 2, "learn_sigma": True})
  config.batch_size, config.compute_dtype = 8, "float32"
  seen = []
  task = tasks.from_config(config.task)
  task = dataclasses.replace(task, formulation=_RecordingFormulation(task.formulation, seen))
  info = _imagenet_info(config, 16)
  build = lambda: tasks.make_model(task, config.model, info, config.compute_dtype,
                                   jax.random.PRNGKey(0))
  abstract = nnx.eval_shape(build)
  assert abstract.latent_shape == (2, 2, 4)
  graph = ModelGraph.of(abstract)
  optimizer = optim.build(config.optim, total_steps=10, steps_per_epoch=10)

  @jax.jit  # built in one compiled call, as the trainer does: eager init is slow on CPU
  def initial_state():
    return TrainState.create(build(), optimizer.tx, jax.random.PRNGKey(0))

  state = initial_state()
  batch = {"image": jax.random.uniform(jax.random.key(0), (8, 16, 16, 3), minval=-1, maxval=1),
           "label": jnp.arange(8) * 100}
  new_state, metrics = jax.jit(steps.make_train_step(task, graph, optimizer))(state, batch)
  assert [(shape, str(dtype)) for shape, dtype in seen] == [((8, 2, 2, 4), "float32")]
  assert np.isfinite(float(metrics["loss"])) and float(metrics["skipped"]) == 0
  assert optax.tree.norm(jax.tree.map(jnp.subtract, new_state.params, state.params)) > 0
  # The first batch set the scale (LDM's scale_by_std): with it, that batch's latents have unit
  # variance; the state keeps it for every later step, evaluation and sample.
  scale = new_state.model_state["latent_scale"]
  assert float(metrics["latent_scale"]) == float(scale) > 0 and float(state.model_state["latent_scale"]) == 0
  latents = jax.jit(lambda s, x: graph.merge(s.params, s.model_state, train=False).encode(x))(new_state, batch["image"])
  assert float(jnp.std(latents)) == pytest.approx(1.0, rel=1e-4)
  before, after = flat_arrays(state.model_state["autoencoder"]), flat_arrays(new_state.model_state["autoencoder"])
  for key, value in before.items():
    np.testing.assert_array_equal(after[key], value, err_msg=key)

