"""Tokenizer → generator on tiny settings: VQGAN training (discriminator start, gradient split),
a checkpoint, MaskGIT on the frozen tokenizer restored with init_from, and samples."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from checkpointed_state import flat_arrays, restore
from flax import nnx

from jaxlab import data, models, tasks, trainer
from jaxlab.checkpoint import Checkpointer
from jaxlab.config import load_config_file, validate
from jaxlab.sample import SampleError, sample_run
from jaxlab.state import ModelGraph


def _tokenizer_config(variant="vqvae"):
  config = load_config_file(f"configs/tokenizer_digits.py:{variant}")
  config.model.channels, config.model.latent_dim = (8, 16), 8
  config.model.quantizer.codebook_size = 16
  config.task.discriminator = {"channels": 8, "n_layers": 1}
  config.batch_size, config.total_steps = 32, 3
  config.log_every_steps = config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  return config


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tokenizer")
  config = _tokenizer_config()
  validate(config, jax.device_count())
  result = trainer.train_and_evaluate(config, workdir)
  return workdir, config, result


def test_tokenizer_reports_reconstruction_and_codebook_metrics(tokenizer_run):
  workdir, _, result = tokenizer_run
  assert {"eval/psnr", "eval/ssim", "eval/codebook_usage", "eval/codebook_perplexity"} <= set(result)
  assert 0.0 < result["eval/codebook_usage"] <= 1.0 and np.isfinite(result["eval/psnr"])
  from jaxlab.metrics.writers import read_jsonl  # pylint: disable=import-outside-toplevel
  logged = read_jsonl(workdir / "metrics.jsonl")[0]
  for key in ("usage", "perplexity", "entropy", "dead_fraction"):
    assert f"train/codebook/{key}" in logged


def test_gan_terms_reach_only_their_own_side_after_disc_start():
  """One gradient of the summed loss gives each side its own: the generator's adversarial term
  does not train the discriminator, the discriminator's hinge and LeCam terms do not train the
  autoencoder; before disc_start the discriminator gets nothing."""
  config = _tokenizer_config(variant="")
  config.task.disc_start, config.task.lecam_weight = 5, 0.1
  info = data.dataset_info(config.dataset)
  batch = {"image": jax.random.uniform(jax.random.key(0), (8, 8, 8, 1), minval=-1, maxval=1),
           "label": jnp.zeros((8,), jnp.int32)}
  task = tasks.from_config(config.task)
  with nnx.use_eager_sharding(False):
    model = tasks.make_model(task, config.model, info, config.compute_dtype,
                             jax.random.PRNGKey(0))
  graph = ModelGraph.of(model)  # as the train step does it
  params, model_state = ModelGraph.state_of(model)

  @jax.jit
  def grads(params, model_state):
    def term(names):
      def f(params):
        merged = graph.merge(params, model_state, train=True, rng=jax.random.PRNGKey(1))
        loss, metrics = task.loss(merged, batch, jax.random.PRNGKey(2))
        return loss if names is None else sum(metrics[n] for n in names)
      return jax.grad(f)(params)
    return term(None), term(["generator_adversarial"]), term(["discriminator", "lecam"])

  def norm(tree):
    return float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(tree)))

  before, _, _ = grads(params, model_state)  # train_batches = 0 < disc_start
  assert norm(before["discriminator"]) == 0.0 and norm(before["autoencoder"]) > 0
  started = {**model_state, "train_batches": jnp.asarray(5, jnp.int32)}
  total, generator, discriminator = grads(params, started)
  assert norm(total["discriminator"]) > 0
  assert norm(generator["discriminator"]) == 0.0 and norm(generator["autoencoder"]) > 0
  assert norm(discriminator["autoencoder"]) == 0.0 and norm(discriminator["discriminator"]) > 0


@pytest.fixture(scope="module")
def maskgit_run(tokenizer_run, tmp_path_factory):
  tokenizer_dir, tokenizer_config, _ = tokenizer_run
  workdir = tmp_path_factory.mktemp("maskgit")
  config = load_config_file(f"configs/maskgit_digits.py:{tokenizer_dir}")
  config.task.tokenizer = tokenizer_config.model
  config.model.width, config.model.depth, config.model.num_heads = 16, 1, 2
  config.batch_size, config.total_steps = 32, 2
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  validate(config, jax.device_count())
  result = trainer.train_and_evaluate(config, workdir)
  return workdir, config, result


def test_maskgit_trains_on_the_frozen_tokenizer(tokenizer_run, maskgit_run):
  tokenizer_dir, tokenizer_config, _ = tokenizer_run
  workdir, config, result = maskgit_run
  assert {"eval/loss", "eval/masked_accuracy"} <= set(result)
  stage1 = restore(tokenizer_dir, tokenizer_config, 3)
  expected = {**flat_arrays(stage1.params["autoencoder"]), **flat_arrays(stage1.model_state["autoencoder"])}
  state = restore(workdir, config, 2)
  frozen = flat_arrays(state.model_state["tokenizer"])
  # Every tokenizer array came from stage 1 and is unchanged after training steps ...
  assert set(frozen) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(frozen[key], value, err_msg=key)
  # ... and it is neither trained nor in the optimizer state.
  assert set(state.params) == {"transformer"}
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
  assert paths and not any("tokenizer" in p for p in paths)


def test_checkpoint_stores_the_tokenizer_once(tokenizer_run, maskgit_run):
  tokenizer_dir, tokenizer_config, _ = tokenizer_run
  workdir, _, _ = maskgit_run
  metadata = ocp.PyTreeCheckpointer().metadata(workdir / "checkpoints" / "2" / "default").item_metadata.tree
  keys = list(_flat_metadata(metadata))
  tokenizer_keys = [k for k in keys if "tokenizer" in k]
  assert tokenizer_keys and all(k.startswith("model_state/tokenizer/") for k in tokenizer_keys)
  stage1 = restore(tokenizer_dir, tokenizer_config, 3)
  assert len(tokenizer_keys) == len(flat_arrays(stage1.params["autoencoder"])) + len(flat_arrays(stage1.model_state["autoencoder"]))


def _flat_metadata(tree, prefix=""):
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      yield from _flat_metadata(value, path + "/")
    else:
      yield path


def test_maskgit_samples_come_from_the_sampling_entry(maskgit_run):
  """`jaxlab.sample` (what `python -m jaxlab.sample` calls) samples MaskGIT runs as it samples
  diffusion runs: the classes in turn, the run's decoding settings unless overridden."""
  workdir, config, _ = maskgit_run
  kw = {"num": 12, "batch": 8, "progress": False}
  a = sample_run(workdir, **kw)
  assert a["images"].shape == (12, 8, 8, 1) and a["images"].dtype == np.uint8
  assert np.isfinite(a["samples"]).all() and a["images"].std() > 0
  assert a["labels"].tolist() == [i % 10 for i in range(12)] and a["num_classes"] == 10
  assert a["sampler"] == "maskgit" and a["steps"] == a["nfe"] == config.task.sampling.steps
  assert a["guidance"] == config.task.sampling.guidance
  np.testing.assert_array_equal(sample_run(workdir, **kw)["images"], a["images"])  # same seed
  # Same seed, other decoding settings: the images change only if the overrides reach the decoder.
  b = sample_run(workdir, steps=2, guidance=3.0, **kw)
  assert (b["steps"], b["nfe"], b["guidance"]) == (2, 2, 3.0)
  assert not np.array_equal(b["images"], a["images"])
  with pytest.raises(SampleError, match="decodes with 'maskgit'; sampler 'heun' is for diffusion runs"):
    sample_run(workdir, num=4, sampler="heun")
  with pytest.raises(SampleError, match="a 'maskgit' run takes no sampling option\\(s\\) eta; valid: sampler, steps, guidance"):
    sample_run(workdir, num=4, eta=0.5)


@pytest.mark.parametrize("spec, image_shape, num_classes, code_count", [
    ("configs/vqgan_cifar10.py", (32, 32, 3), 10, None),
    ("configs/maskgit_imagenet256.py", (256, 256, 3), 1000, 256),
])
def test_accelerator_configs_validate_and_build_abstractly(spec, image_shape, num_classes, code_count):
  config = load_config_file(spec)
  validate(config, 8)
  info = data.DatasetInfo(config.dataset.name, num_classes, image_shape, 50_000, 10_000, "train",
                          config.dataset.eval_split)
  task = tasks.from_config(config.task)
  model = nnx.eval_shape(lambda: tasks.make_model(task, config.model, info, config.compute_dtype,
                                                  jax.random.PRNGKey(0)))
  params = nnx.state(model, nnx.Param)
  assert sum(x.size for x in jax.tree.leaves(params)) > 1_000_000
  if code_count is not None:  # MaskGIT over the f16 tokenizer's 16x16 codes, 1024 + MASK tokens
    assert model.transformer.seq_len == code_count and model.code_shape == (16, 16)
    assert model.transformer.token_embed.shape == (1025, 768)


def test_titok_gives_a_fixed_number_of_tokens_per_image():
  with nnx.use_eager_sharding(False):
    titok = models.create("titok", num_classes=10, rngs=nnx.Rngs(params=0, dropout=1), in_channels=1,
                          image_size=8, patch_size=2, width=16, depth=1, num_heads=2,
                          num_latent_tokens=5, latent_dim=4, quantizer={"name": "fsq", "levels": (5, 5, 5, 5)})
  titok.eval()
  images = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1), minval=-1, maxval=1)
  # One compiled call: eager ViT ops are slow on CPU.
  reconstruction, quantized, decoded = nnx.jit(lambda m, x: (*m(x), m.decode_codes(m.encode(x).codes)))(
      titok, images)
  assert reconstruction.shape == images.shape and quantized.codes.shape == (3, 5)
  assert titok.code_shape(images.shape[1:]) == (5,)
  np.testing.assert_allclose(decoded, reconstruction, atol=1e-5)


def test_perceptual_loss_on_a_frozen_classifier_checkpoint(tmp_path):
  """A VQ-VAE with the perceptual loss on a small_cnn restored from a classification run's
  checkpoint (init_from): it trains, reports the term, and the feature network stays frozen."""
  classifier = load_config_file("configs/quickstart.py")
  classifier.seed = 3
  state = trainer.initial_state(trainer.build(classifier))  # its training is tested elsewhere
  checkpointer = Checkpointer(tmp_path / "classifier" / "checkpoints", every_steps=1, keep=1)
  checkpointer.maybe_save(5, state, force=True)
  checkpointer.close()
  expected = {**flat_arrays(state.params), **flat_arrays(state.model_state)}

  config = _tokenizer_config()
  config.model.quantizer.kmeans_init = config.model.quantizer.restart_dead = False  # less to compile
  config.task.perceptual_weight = 0.5
  config.task.perceptual_network = {"name": "small_cnn"}
  config.init_from.path = str(tmp_path / "classifier")
  config.init_from.include = ("^params/", "^model_state/")
  config.init_from.rename = ((r"^(params|model_state)/", "model_state/perceptual/network/"),)
  config.total_steps = config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  validate(config, jax.device_count())
  workdir = tmp_path / "tokenizer"
  trainer.train_and_evaluate(config, workdir)

  from jaxlab.metrics.writers import read_jsonl  # pylint: disable=import-outside-toplevel
  logged = read_jsonl(workdir / "metrics.jsonl")[0]
  assert logged["train/perceptual"] > 0 and np.isfinite(logged["train/loss"])
  trained = restore(workdir, config, 2)
  frozen = flat_arrays(trained.model_state["perceptual"]["network"])
  assert set(frozen) == set(expected)  # every classifier array, batch statistics included ...
  for key, value in expected.items():  # ... copied and unchanged by two training steps
    np.testing.assert_array_equal(frozen[key], value, err_msg=key)
  assert set(trained.params) == {"autoencoder"}
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(trained.opt_state)[0]]
  assert paths and not any("perceptual" in p for p in paths)
