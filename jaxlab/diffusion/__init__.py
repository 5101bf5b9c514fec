"""Diffusion: noise schedules, formulations (DDPM, EDM, flow matching), samplers and guidance.

  noise_schedule(name, num_train_timesteps)   diffusers' beta schedules
  karras_sigmas(n, sigma_min, sigma_max, rho)  EDM's sampling steps
  DDPM, EDM, FlowMatching                      what the network predicts, losses, sampling grids
  DDPMSampler, DDIM, Euler, Heun, DPMSolverMultistep   samplers over a Grid
  Churn(s_churn, s_min, s_max, s_noise)        EDM's stochastic churn for Euler/Heun (EDM grids)
  generate(net, formulation, sampler, labels, rng, shape, guidance=w)
"""

from jaxlab.diffusion.formulations import DDPM, EDM, FlowMatching
from jaxlab.diffusion.generate import generate, guided
from jaxlab.diffusion.samplers import (
                                       DDIM,
                                       SAMPLERS,
                                       Churn,
                                       DPMSolverMultistep,
                                       Euler,
                                       Grid,
                                       Heun,
                                       Sampler,
                                       timestep_grid,
)
from jaxlab.diffusion.samplers import DDPM as DDPMSampler
from jaxlab.diffusion.samplers import create as create_sampler
from jaxlab.diffusion.schedules import (
                                       BETA_SCHEDULES,
                                       NoiseSchedule,
                                       karras_sigmas,
                                       noise_schedule,
)

__all__ = [
                                       "BETA_SCHEDULES",
                                       "Churn",
                                       "DDIM",
                                       "DDPM",
                                       "EDM",
                                       "SAMPLERS",
                                       "DDPMSampler",
                                       "DPMSolverMultistep",
                                       "Euler",
                                       "FlowMatching",
                                       "Grid",
                                       "Heun",
                                       "NoiseSchedule",
                                       "Sampler",
                                       "create_sampler",
                                       "generate",
                                       "guided",
                                       "karras_sigmas",
                                       "noise_schedule",
                                       "timestep_grid",
]
