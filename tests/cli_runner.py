"""Runs `python -m jaxlab.train` in a subprocess with a chosen number of simulated CPU devices."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def train_env(devices: int, data_dir: pathlib.Path | None = None, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # as a user would run it
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  if data_dir is not None:
    env["TFDS_DATA_DIR"] = str(data_dir)
  env.update(extra)
  return env


def train_command(config: str, workdir, *overrides: str) -> list[str]:
  return [sys.executable, "-m", "jaxlab.train", f"--config={config}", f"--workdir={workdir}", *overrides]


def start(config, workdir, *overrides, devices=1, data_dir=None, **env) -> subprocess.Popen:
  return subprocess.Popen(train_command(config, workdir, *overrides), cwd=ROOT,
                          env=train_env(devices, data_dir, **env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def run(config, workdir, *overrides, devices=1, data_dir=None, timeout=600, **env):
  """Runs to completion; returns (returncode, stdout, stderr)."""
  proc = start(config, workdir, *overrides, devices=devices, data_dir=data_dir, **env)
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err
