#!/usr/bin/env python3
"""Start one jaxlab training run over several GPU hosts, over SSH: one process per host or per GPU.

  python scripts/gpu_hosts.py --hosts=gpu0,gpu1 --gpus-per-host=8 [--per-gpu] [--port=12345] \\
      [--repo=~/jaxlab] [--python=.venv/bin/python] [--log-dir=logs/run] [--env=KEY=VALUE ...] \\
      [--dry-run] -- --config=configs/NAME.py --workdir=/shared/workdirs/NAME [--config.KEY=VALUE ...]

Every process runs `python -m jaxlab.train ... --multihost --coordinator_address=HOST0:PORT
--num_processes=N --process_id=i`, which `jax.distributed.initialize()` needs on GPU hosts:

  * per host (default): N = hosts, process i on host i sees all of its GPUs;
  * per GPU (--per-gpu): N = hosts × gpus_per_host, process i = host × gpus_per_host + gpu runs
    with CUDA_VISIBLE_DEVICES=gpu (the order SLURM's block distribution gives too).

Each process's output goes to LOG_DIR/process-i.log on this machine (through its ssh
connection); process 0's is also shown here as it arrives. Host `localhost` runs without ssh.
Ctrl-C sends every process one SIGTERM (jaxlab.train saves a checkpoint and stops) and exits 130.
All processes must see the same --workdir (a shared file system: NFS, Lustre, a mounted bucket):
checkpoints are written by every process, each its own shards. The hosts need jaxlab checked out
at --repo (the same commit everywhere) and passwordless ssh from this machine.
`--dry-run` prints the command of every process, one per line, and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from launch_cli import (
  LaunchError,
  OneLineParser,
  check_train_args,
  fail,
  print_lines,
  run_line,
  split_train_args,
)


def parse_args(argv):
  parser = OneLineParser(prog="gpu_hosts.py", description=__doc__, epilog="See docs/gpu_hosts.md.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hosts", required=True,
                      help="comma-separated ssh host names; the first is the coordinator (process 0)")
  parser.add_argument("--gpus-per-host", type=int, default=8, help="GPUs on each host (default 8)")
  parser.add_argument("--per-gpu", action="store_true",
                      help="one process per GPU (CUDA_VISIBLE_DEVICES) instead of one per host")
  parser.add_argument("--coordinator-host", default=None,
                      help="address of the first host as the others reach it (default: its ssh name)")
  parser.add_argument("--port", type=int, default=12345, help="coordinator port on the first host")
  parser.add_argument("--repo", default="~/jaxlab", help="jaxlab checkout on every host (default ~/jaxlab)")
  parser.add_argument("--python", default="python3",
                      help="Python on the hosts, relative to --repo or absolute (e.g. .venv/bin/python)")
  parser.add_argument("--log-dir", default="logs/gpu_hosts",
                      help="where process-i.log files go on this machine")
  parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="environment variable for every process (repeatable)")
  parser.add_argument("--ssh", default="ssh -o BatchMode=yes", help="ssh command (default: %(default)s)")
  parser.add_argument("--dry-run", action="store_true", help="print the commands, one per line, run nothing")
  return parser.parse_args(argv)


def plan(args, train_args: list[str]) -> list[tuple[int, str, str, str]]:
  """[(process id, host, gpu or '', command line)] for every process of the run."""
  hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
  if not hosts:
    raise LaunchError("--hosts is empty; give host names separated by commas")
  if len(set(hosts)) != len(hosts):
    raise LaunchError(f"--hosts names a host twice: {args.hosts}")
  if args.gpus_per_host < 1:
    raise LaunchError(f"--gpus-per-host must be at least 1, got {args.gpus_per_host}")
  if not 0 < args.port < 65536:
    raise LaunchError(f"--port must be in 1..65535, got {args.port}")
  for pair in args.env:
    if "=" not in pair or not pair.split("=", 1)[0].isidentifier():
      raise LaunchError(f"--env takes KEY=VALUE, got '{pair}'")
  check_train_args(train_args)

  slots = [(h, str(g)) for h in hosts for g in range(args.gpus_per_host)] if args.per_gpu else \
          [(h, "") for h in hosts]
  coordinator = f"{args.coordinator_host or hosts[0]}:{args.port}"
  log_dir = pathlib.Path(args.log_dir)
  processes = []
  for process_id, (host, gpu) in enumerate(slots):
    env = ([f"CUDA_VISIBLE_DEVICES={gpu}"] if gpu else []) + list(args.env)
    train = [args.python, "-m", "jaxlab.train", *train_args, "--multihost",
             f"--coordinator_address={coordinator}", f"--num_processes={len(slots)}",
             f"--process_id={process_id}"]
    # `~` must reach the remote shell unquoted to expand there.
    repo = args.repo if args.repo.startswith("~") else shlex.quote(args.repo)
    remote = f"cd {repo} && exec {shlex.join(['env', *env, *train]) if env else shlex.join(train)}"
    log = shlex.quote(str(log_dir / f"process-{process_id}.log"))
    if host == "localhost":
      line = f"({remote}) > {log} 2>&1"
    else:
      line = f"{args.ssh} {shlex.quote(host)} {shlex.quote(remote)} > {log} 2>&1"
    processes.append((process_id, host, gpu, line))
  return processes


def _follow(path: pathlib.Path, position: int) -> int:
  """Prints what was appended to `path` since `position`; returns the new position."""
  if not path.exists():
    return position
  with open(path, "rb") as f:
    f.seek(position)
    chunk = f.read()
  sys.stdout.write(chunk.decode("utf-8", "replace"))
  sys.stdout.flush()
  return position + len(chunk)


def launch(processes, log_dir: pathlib.Path) -> int:
  """Starts every process, shows process 0's log as it grows, waits; 0 when all succeeded."""
  log_dir.mkdir(parents=True, exist_ok=True)
  for process_id, host, gpu, _ in processes:
    where = f"{host}, GPU {gpu}" if gpu else host
    print(f"process {process_id} ({where}): log {log_dir / f'process-{process_id}.log'}", file=sys.stderr)
  # Each process in its own session: Ctrl-C here reaches them as one SIGTERM each (on which a
  # local jaxlab.train saves a checkpoint and stops), not as a SIGINT to everything at once. The
  # bash around each command traps SIGTERM (a handler, reset for the command it starts) so that it
  # outlives the command and reports its exit status.
  # Ctrl-C only sets a flag (a KeyboardInterrupt raised while processes are being started could
  # leave one running and unsignalled); the loop below sees it within half a second.
  interrupts = []
  previous = signal.signal(signal.SIGINT, lambda *_: interrupts.append(True))
  try:
    running = [run_line(f"trap : TERM; {line}", stdin=subprocess.DEVNULL, start_new_session=True)
               for *_, line in processes]
    first_log, position = log_dir / "process-0.log", 0
    while not interrupts and any(p.poll() is None for p in running):
      position = _follow(first_log, position)
      time.sleep(0.5)
    interrupted = bool(interrupts)
    if interrupted:
      for p in running:
        if p.poll() is None:
          os.killpg(p.pid, signal.SIGTERM)
    codes = [p.wait() for p in running]
  finally:
    signal.signal(signal.SIGINT, previous)
  _follow(first_log, position)
  if interrupted:
    statuses = ", ".join(f"{pid}: {code}" for (pid, *_), code in zip(processes, codes))
    print(f"interrupted: every process got SIGTERM; exit statuses {statuses} (logs in {log_dir})",
          file=sys.stderr)
    return 130
  failed = [(pid, code) for (pid, *_), code in zip(processes, codes) if code != 0]
  if failed:
    pid, code = failed[0]
    tail = (log_dir / f"process-{pid}.log").read_text(errors="replace").splitlines()[-20:]
    print("\n".join(tail), file=sys.stderr)
    print(f"error: process {pid} exited with status {code} ({len(failed)} of {len(codes)} failed); "
          f"its log: {log_dir / f'process-{pid}.log'}", file=sys.stderr)
    return 1
  return 0


def main(argv=None) -> int:
  launcher_args, train_args = split_train_args(sys.argv[1:] if argv is None else argv)
  args = parse_args(launcher_args)
  try:
    processes = plan(args, train_args)
  except LaunchError as e:
    fail(str(e))
  if args.dry_run:
    print_lines([line for *_, line in processes])
    return 0
  return launch(processes, pathlib.Path(args.log_dir))


if __name__ == "__main__":
  sys.exit(main())
