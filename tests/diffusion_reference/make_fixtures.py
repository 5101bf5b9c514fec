"""Writes diffusers_fixtures.npz: reference numbers from diffusers for tests/test_diffusion_samplers.py.

Run once, in an environment with torch and diffusers (not a jaxlab dependency):

  python tests/diffusion_reference/make_fixtures.py

Written with diffusers 0.42.1 and torch 2.13.0 (CPU). Stored: betas and alphas_cumprod of
DDPMScheduler for the three beta schedules; DDIMScheduler timesteps and step() outputs for fixed
inputs (eta, prediction type and clipping varied, the variance noise given); DDPMScheduler step()
outputs with the noise its generator draws; a 10-step DPMSolverMultistepScheduler trajectory with
a fixed analytic "network".
"""

import pathlib

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

OUT = pathlib.Path(__file__).with_name("diffusers_fixtures.npz")
SCHEDULES = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (1e-4, 0.02)}


def fake_eps(x: torch.Tensor) -> torch.Tensor:
  """A smooth stand-in for a network's epsilon prediction (the test evaluates the same function)."""
  return 0.3 * x + 0.1 * torch.sin(3.0 * x)


def main():
  out = {"diffusers_version": np.array(diffusers.__version__)}
  for name, (start, end) in SCHEDULES.items():
    s = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=start, beta_end=end)
    out[f"{name}/betas"] = s.betas.numpy()
    out[f"{name}/alphas_cumprod"] = s.alphas_cumprod.numpy()

  rng = np.random.default_rng(0)
  shape = (2, 4, 4, 3)
  sample = rng.normal(size=shape).astype(np.float32)
  model_output = rng.normal(size=shape).astype(np.float32)
  noise = rng.normal(size=shape).astype(np.float32)
  out.update({"step/sample": sample, "step/model_output": model_output, "step/noise": noise})
  for n in (50, 7):
    for prediction in ("epsilon", "v_prediction", "sample"):
      for eta in (0.0, 0.5):
        for clip in (False, True):
          s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", steps_offset=0,
                            set_alpha_to_one=True, timestep_spacing="leading", clip_sample=clip,
                            prediction_type=prediction)
          s.set_timesteps(n)
          out[f"ddim{n}/timesteps"] = s.timesteps.numpy()
          results = []
          for t in s.timesteps[[0, n // 2, n - 1]]:
            results.append(s.step(torch.from_numpy(model_output), int(t), torch.from_numpy(sample), eta=eta,
                                  variance_noise=torch.from_numpy(noise)).prev_sample.numpy())
          out[f"ddim{n}/{prediction}/eta{eta}/clip{int(clip)}"] = np.stack(results)

  for n in (1000, 50):
    s = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                      timestep_spacing="leading", steps_offset=0)
    s.set_timesteps(n)
    out[f"ddpm{n}/timesteps"] = s.timesteps.numpy()
    results, noises = [], []
    for k, t in enumerate(s.timesteps[[0, n // 2, n - 2]]):
      noises.append(torch.randn(shape, generator=torch.Generator().manual_seed(k)).numpy())
      results.append(s.step(torch.from_numpy(model_output), int(t), torch.from_numpy(sample),
                            generator=torch.Generator().manual_seed(k)).prev_sample.numpy())
    out[f"ddpm{n}/prev_sample"] = np.stack(results)
    out[f"ddpm{n}/noise"] = np.stack(noises)

  s = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", algorithm_type="dpmsolver++",
                                  solver_order=2, solver_type="midpoint", final_sigmas_type="zero",
                                  lower_order_final=True, timestep_spacing="leading", steps_offset=0)
  s.set_timesteps(10)
  out["dpmpp10/timesteps"] = s.timesteps.numpy()
  x = torch.from_numpy(sample)
  for t in s.timesteps:
    x = s.step(fake_eps(x), t, x).prev_sample
  out["dpmpp10/final"] = x.numpy()
  np.savez_compressed(OUT, **out)
  print(f"wrote {len(out)} arrays to {OUT}")


if __name__ == "__main__":
  torch.set_default_dtype(torch.float32)
  main()
