"""`config.task` of the `diffusion` task: formulation, hyperparameters, conditioning, sampling defaults.

Experiment configs set `config.task = diffusion_task_config()` and change what they need; then
`--config.task.formulation=flow` and the like work on the command line.

  name             'diffusion'

  formulation      'ddpm' | 'edm' | 'flow'
  ddpm:            schedule ('linear', 'scaled_linear', 'squaredcos_cap_v2'), num_train_timesteps,
                   beta_start, beta_end, prediction ('epsilon', 'v_prediction', 'sample'),
                   loss_weighting ('none', 'min_snr'), min_snr_gamma
  edm:             sigma_data, p_mean, p_std (training sigmas); sigma_min, sigma_max, rho (sampling)
  flow:            time_sampling ('uniform', 'logit_normal'), logit_mean, logit_std, shift (sampling)
  conditional      class-conditional on the dataset's labels (the label table gets one extra
                   "null" row, the unconditional input of classifier-free guidance)
  label_dropout    probability of training on the null label instead (CFG); 0.1 is common
  sampler, sample_steps, guidance   what `jaxlab.sample` uses when its flags do not say
  autoencoder      None: diffusion on pixels. A stage-1 model config (name + kwargs, e.g. the
                   tokenizer run's `config.model`): latent diffusion on its frozen latents
                   (jaxlab/diffusion/latent.py); its weights come from that run via init_from
  latent_scale     latents are multiplied by it; 0 = 1/std of the first training batch's (LDM)
"""

from __future__ import annotations

import ml_collections

SAMPLER_NAMES = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m")


def diffusion_task_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "diffusion",
      "formulation": "edm",
      "schedule": "linear", "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
      "prediction": "epsilon", "loss_weighting": "none", "min_snr_gamma": 5.0,
      "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2,
      "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
      "time_sampling": "uniform", "logit_mean": 0.0, "logit_std": 1.0, "shift": 1.0,
      "conditional": True, "label_dropout": 0.1,
      "sampler": "heun", "sample_steps": 18, "guidance": 1.0,
      "autoencoder": None, "latent_scale": 0.0,
  })


def check_diffusion_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises a one-line ValueError naming the first bad `config.task` key of a diffusion task."""
  from jaxlab.diffusion import formulations, schedules  # pylint: disable=import-outside-toplevel
  choices = {"formulation": formulations.FORMULATIONS, "schedule": schedules.BETA_SCHEDULES,
             "prediction": formulations.PREDICTIONS, "loss_weighting": formulations.LOSS_WEIGHTINGS,
             "time_sampling": formulations.TIME_SAMPLINGS, "sampler": SAMPLER_NAMES}
  unknown = sorted(set(cfg) - set(diffusion_task_config()))
  if unknown:
    valid = sorted(set(diffusion_task_config()) - {"name"})
    raise ValueError(f"unknown key(s) {', '.join(unknown)} for task 'diffusion'; valid: "
                     f"{', '.join(valid)}")
  for key, valid in choices.items():
    if cfg[key] not in valid:
      raise ValueError(f"config.task.{key}={cfg[key]!r}; valid: {', '.join(valid)}")
  if not 0.0 <= cfg.label_dropout < 1.0:
    raise ValueError(f"config.task.label_dropout={cfg.label_dropout} must be in [0, 1)")
  for key in ("sigma_data", "p_std", "sigma_min", "sigma_max", "rho", "shift", "logit_std", "min_snr_gamma"):
    if cfg[key] <= 0:
      raise ValueError(f"config.task.{key}={cfg[key]} must be positive")
  if cfg.sigma_min >= cfg.sigma_max:
    raise ValueError(f"config.task.sigma_min={cfg.sigma_min} must be below sigma_max={cfg.sigma_max}")
  if cfg.num_train_timesteps < 2 or cfg.sample_steps < 1:
    raise ValueError("config.task.num_train_timesteps must be >= 2 and sample_steps >= 1")
  if cfg.latent_scale < 0:
    raise ValueError(f"config.task.latent_scale={cfg.latent_scale} must be >= 0 (0: estimated from the data)")
  if cfg.autoencoder is not None:
    from jaxlab import models  # pylint: disable=import-outside-toplevel
    if "name" not in cfg.autoencoder:
      raise ValueError("config.task.autoencoder needs the stage-1 model config, with its 'name'")
    try:
      models.check_kwargs(cfg.autoencoder.name, {k: v for k, v in cfg.autoencoder.items() if k != "name"})
    except ValueError as e:
      raise ValueError(f"config.task.autoencoder: {e}") from None
  if not 0 < cfg.beta_start < cfg.beta_end < 1:
    raise ValueError(f"config.diffusion needs 0 < beta_start < beta_end < 1, got {cfg.beta_start}, {cfg.beta_end}")
