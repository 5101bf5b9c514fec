"""What the launch scripts (tpu_vm.py, gpu_hosts.py) share: one-line argument errors, the
arguments handed through to `python -m jaxlab.train`, and running or printing (--dry-run) shell
command lines.

A launcher builds every command as one bash line; `--dry-run` prints exactly those lines and runs
nothing, so what the tests check is what a real launch runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

# Flags the launchers set themselves; given among the training arguments they would clash.
LAUNCHER_FLAGS = ("--multihost", "--coordinator_address", "--num_processes", "--process_id")


class LaunchError(ValueError):
  """Bad launcher input; the message is one line naming the problem."""


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
  """argparse whose errors are one `error: ...` line (exit status 2), without the usage block."""

  def error(self, message: str) -> NoReturn:
    fail(f"{message} (see --help)")


def split_train_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(launcher arguments, training arguments): everything after the first `--` goes to jaxlab.train."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  cut = argv.index("--")
  return argv[:cut], argv[cut + 1:]


def check_train_args(train_args: Sequence[str], required: Sequence[str] = ("--config", "--workdir")) -> None:
  """The training arguments name a config and a workdir, and leave the multi-host flags to us."""
  examples = {"--config": "--config=configs/NAME.py[:ARG]", "--workdir": "--workdir=DIR"}
  for flag in required:
    if not any(a.startswith(f"{flag}=") for a in train_args):
      raise LaunchError(f"the training arguments after `--` need {examples.get(flag, flag + '=...')}")
  for arg in train_args:
    if arg.split("=", 1)[0] in LAUNCHER_FLAGS:
      raise LaunchError(f"{arg.split('=', 1)[0]} is set by the launcher; leave it out of the "
                        "training arguments")


def flag_value(train_args: Sequence[str], flag: str) -> str | None:
  """The value of the last `--flag=value` among the training arguments, or None."""
  values = [a.split("=", 1)[1] for a in train_args if a.startswith(f"{flag}=")]
  return values[-1] if values else None


def print_lines(lines: Sequence[str]) -> None:
  for line in lines:
    print(line)


def run_line(line: str, **popen_kwargs) -> subprocess.Popen:
  """Starts one command line under bash (pipefail: a pipeline fails when any part of it fails)."""
  return subprocess.Popen(["bash", "-o", "pipefail", "-c", line], **popen_kwargs)


def run_in_order(lines: Sequence[str]) -> int:
  """Runs the lines one after the other, echoing each; stops at the first that fails."""
  for line in lines:
    print(f"+ {line}", file=sys.stderr, flush=True)
    code = run_line(line).wait()
    if code != 0:
      print(f"error: exit status {code} from: {line}", file=sys.stderr)
      return code
  return 0
