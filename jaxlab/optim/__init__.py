"""Optimizers (PyTorch-exact, by name), schedules, weight-decay groups and weight averaging."""

from jaxlab.optim.averaging import averaged_params, ema, lookahead, sema, swa
from jaxlab.optim.param_groups import ParamGroupError, lr_scales, scale_by_param_group
from jaxlab.optim.build import Optimizer, available_averaging, build, weight_decay_labels
from jaxlab.optim.registry import (StepNeeds, available, check_hparams, create, describe, entry,
                                   foreign_hparams, register)
from jaxlab.optim.recent_optimizers import evaluation_params, schedule_free_eval_params
from jaxlab.optim.schedules import available_schedules, make_schedule
# Importing the optimizer modules registers them.
from jaxlab.optim import muon  # noqa: F401  timm's Muon with its AdamW fallback
from jaxlab.optim import recent_optimizers  # noqa: F401  schedule-free AdamW, Prodigy, SOAP, SAM
from jaxlab.optim import research_optimizers  # noqa: F401  Adan, NovoGrad, Adafactor, AdaBound, SophiaG, Adopt
from jaxlab.optim import timm_optimizers  # noqa: F401  SGDP, AdamP, Lamb, Lars, Lion, AdaBelief
from jaxlab.optim import torch_optimizers  # noqa: F401  the torch.optim classes
from jaxlab.optim import registry as _registry

_registry.document_create()  # help(jaxlab.optim.create) lists every optimizer above with its defaults
