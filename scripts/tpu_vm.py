#!/usr/bin/env python3
"""Run jaxlab on a Cloud TPU VM or a multi-host TPU slice with gcloud.

  python scripts/tpu_vm.py launch --name=NAME --zone=ZONE [--project=PROJECT] \\
      [--accelerator-type=v4-32] [--version=auto] [--spot | --preemptible] \\
      [--repo=https://github.com/ORG/jaxlab] [--ref=main] [--logs=logs/tpu] [--detach] [--dry-run] \\
      -- --config=configs/NAME.py --workdir=gs://BUCKET/workdirs/NAME [--config.KEY=VALUE ...]

Subcommands (each prints its gcloud commands with --dry-run and runs nothing):

  create   create the TPU VM, or reuse it if it exists (a preempted spot VM is deleted and created again)
  install  on every worker (--worker=all): check out --repo at --ref into ~/jaxlab, create
           ~/jaxlab/.venv (Python 3.12, with uv) and install jaxlab and jax[tpu] into it
  train    start `python -m jaxlab.train ... --multihost` on every worker at once; the output of all
           workers streams here and each worker keeps it in ~/jaxlab-logs/train.log (with --detach the
           run goes on in the background: follow it with `logs`)
  logs     follow ~/jaxlab-logs/train.log of one worker (--worker, default 0)
  collect  copy every worker's log to LOGS/NAME/worker-i/, and the workdir to LOGS/NAME/workdir/
  delete   delete the TPU VM
  launch   create, install, train, collect

On a TPU VM `jax.distributed.initialize()` finds the coordinator, the process count and this
worker's index by itself, so the workers all run the same command with `--multihost` and nothing
else. A multi-host slice needs its workdir on a file system every worker shares: with
--workdir=gs://BUCKET/PATH every worker mounts the bucket with gcsfuse at ~/gcs/BUCKET and trains
in ~/gcs/BUCKET/PATH. A single-host TPU VM may use a local workdir (relative to ~/jaxlab), which
`collect` copies back. Running `launch` again after a preemption resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from launch_cli import (
  LaunchError,
  OneLineParser,
  check_train_args,
  fail,
  flag_value,
  print_lines,
  run_in_order,
  split_train_args,
)

SUBCOMMANDS = {
    "create": "create the TPU VM, or reuse it (a preempted spot VM is deleted and created again)",
    "install": "check out jaxlab and install it with jax[tpu] into ~/jaxlab/.venv on every worker",
    "train": "start python -m jaxlab.train ... --multihost on every worker (training args after --)",
    "logs": "follow ~/jaxlab-logs/train.log of one worker",
    "collect": "copy every worker's log and the workdir (given after -- as --workdir=...) back here",
    "delete": "delete the TPU VM",
    "launch": "create, install, train, collect (training args after --)",
}
# Software versions Google lists for JAX per TPU generation (cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v4": "tpu-ubuntu2204-base",
                    "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e"}
REMOTE_LOG = "~/jaxlab-logs/train.log"
REMOTE_PYTHON = "~/jaxlab/.venv/bin/python"


def workers(accelerator_type: str) -> int:
  """Hosts (TPU VM workers) of an accelerator type, from Google's topology tables.

  v2, v3, v4 and v5p count TensorCores, 8 per host (v4/v5p: 4 chips of 2 cores); v5litepod (v5e)
  and v6e count chips: up to 8 on one host, 4 per host beyond.
  """
  match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)", accelerator_type)
  if not match:
    raise LaunchError(f"unknown --accelerator-type '{accelerator_type}'; valid: GENERATION-SIZE with "
                      f"GENERATION in {', '.join(RUNTIME_VERSIONS)} (e.g. v4-32, v5litepod-16, v6e-8)")
  generation, size = match.group(1), int(match.group(2))
  if generation in ("v5litepod", "v6e"):
    return 1 if size <= 8 else size // 4
  return max(1, size // 8)


def _gcloud(verb: str, args, *extra: str) -> str:
  """`gcloud compute tpus tpu-vm VERB NAME --zone --project EXTRA` (scp names the VM in its paths)."""
  project = [f"--project={args.project}"] if args.project else []
  name = [] if verb == "scp" else [args.name]
  return shlex.join(["gcloud", "compute", "tpus", "tpu-vm", verb, *name, f"--zone={args.zone}", *project,
                     *extra])


def _on_workers(args, command: str, worker: str = "all") -> str:
  """`gcloud ... ssh --worker=W --command=...`: the command runs on those workers at once."""
  return _gcloud("ssh", args, f"--worker={worker}", f"--command={command}")


def create_lines(args) -> list[str]:
  version = args.version if args.version != "auto" else RUNTIME_VERSIONS[args.accelerator_type.split("-")[0]]
  capacity = ["--spot"] if args.spot else ["--preemptible"] if args.preemptible else []
  describe = _gcloud("describe", args, "--format=value(state)")
  delete = _gcloud("delete", args, "--quiet")
  create = _gcloud("create", args, f"--accelerator-type={args.accelerator_type}", f"--version={version}",
                   *capacity)
  return [(f"state=$({describe} 2>/dev/null || true); "
           f"if [ \"$state\" = PREEMPTED ]; then {delete}; state=; fi; "
           f"if [ -z \"$state\" ]; then {create}; else echo \"reusing TPU VM {args.name} ($state)\"; fi")]


def install_lines(args) -> list[str]:
  repo, ref = shlex.quote(args.repo), shlex.quote(args.ref)
  # jax>=0.7 needs Python >= 3.11, newer than some TPU images ship: uv brings its own.
  command = (
      "set -e; "
      f"[ -d ~/jaxlab/.git ] || git clone -q {repo} ~/jaxlab; "
      f"git -C ~/jaxlab fetch -q origin {ref} && git -C ~/jaxlab checkout -q FETCH_HEAD; "
      "command -v uv >/dev/null || [ -x ~/.local/bin/uv ] || curl -LsSf https://astral.sh/uv/install.sh | sh; "
      "export PATH=~/.local/bin:$PATH; "
      "[ -x ~/jaxlab/.venv/bin/python ] || uv venv -q --python 3.12 ~/jaxlab/.venv; "
      "uv pip install -q --python ~/jaxlab/.venv/bin/python -e ~/jaxlab 'jax[tpu]'")
  return [_on_workers(args, command)]


def _bucket_path(workdir: str) -> tuple[str, str]:
  match = re.fullmatch(r"gs://([a-z0-9][-_.a-z0-9]{1,61}[a-z0-9])(/[-_.a-zA-Z0-9/]*)?", workdir)
  if not match:
    raise LaunchError(f"--workdir '{workdir}' is not gs://BUCKET/PATH (letters, digits, -_./)")
  return match.group(1), (match.group(2) or "/").strip("/")


def _mount(bucket: str) -> str:
  """Installs gcsfuse if missing and mounts the bucket at ~/gcs/BUCKET (both only once)."""
  install = (
      "echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt "
      "gcsfuse-$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && "
      "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg "
      "| sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && "
      "sudo apt-get -qq update && sudo apt-get -qq install -y gcsfuse")
  # Orbax finishes a checkpoint by renaming its directory: gcsfuse renames directories only
  # when allowed to (this many objects at most).
  return (f"command -v gcsfuse >/dev/null || {{ {install}; }}; mkdir -p ~/gcs/{bucket}; "
          f"mountpoint -q ~/gcs/{bucket} || gcsfuse -o rw --implicit-dirs --rename-dir-limit=200000 "
          f"{bucket} ~/gcs/{bucket}")


def train_lines(args, train_args: list[str]) -> list[str]:
  workdir = flag_value(train_args, "--workdir")
  count = workers(args.accelerator_type)
  if workdir.startswith("gs://"):
    bucket, path = _bucket_path(workdir)
    setup = f"{_mount(bucket)}; "
    # $HOME, not ~: the shell expands ~ only at the start of a word.
    workdir_arg = f"--workdir=\"$HOME/gcs/{bucket}/{path}\""
  else:
    if count > 1:
      raise LaunchError(
          f"a {count}-worker slice ({args.accelerator_type}) needs --workdir=gs://BUCKET/PATH: every "
          "worker writes its shards of each checkpoint into the same directory")
    setup, workdir_arg = "", shlex.quote(f"--workdir={workdir}")
  others = shlex.join([a for a in train_args if not a.startswith("--workdir=")])
  env = f"env {shlex.join(args.env)} " if args.env else ""
  train = f"{env}{REMOTE_PYTHON} -m jaxlab.train {others} {workdir_arg} --multihost"
  if args.detach:
    run = f"setsid nohup {train} >> {REMOTE_LOG} 2>&1 < /dev/null &"
  else:
    run = f"{train} 2>&1 | tee -a {REMOTE_LOG}"
  return [_on_workers(args, f"set -eo pipefail; mkdir -p ~/jaxlab-logs; {setup}cd ~/jaxlab && {run}")]


def logs_lines(args) -> list[str]:
  return [_on_workers(args, f"tail -n 200 -F {REMOTE_LOG}", worker=str(args.worker))]


def collect_lines(args, train_args: list[str]) -> list[str]:
  local = pathlib.Path(args.logs) / args.name
  lines = []
  for worker in range(workers(args.accelerator_type)):
    target = local / f"worker-{worker}"
    lines.append(f"mkdir -p {shlex.quote(str(target))} && " +
                 _gcloud("scp", args, f"--worker={worker}", f"{args.name}:{REMOTE_LOG}", f"{target}/"))
  workdir = flag_value(train_args, "--workdir")
  if workdir.startswith("gs://"):
    _bucket_path(workdir)
    lines.append(shlex.join(["gcloud", "storage", "rsync", "--recursive", workdir, str(local / "workdir")]))
  else:
    remote = workdir if workdir.startswith(("/", "~")) else f"~/jaxlab/{workdir}"
    lines.append(f"rm -rf {shlex.quote(str(local / 'workdir'))} && " +
                 _gcloud("scp", args, "--worker=0", "--recurse", f"{args.name}:{remote}", str(local / "workdir")))
  return lines


def delete_lines(args) -> list[str]:
  return [_gcloud("delete", args, "--quiet")]


def parse_args(argv):
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--name", required=True, help="TPU VM name")
  common.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-west4-a (v5e)")
  common.add_argument("--project", default=None, help="Google Cloud project (default: gcloud's)")
  common.add_argument("--accelerator-type", default="v4-8",
                      help="TPU type and size, e.g. v4-8, v4-32, v5litepod-16, v6e-8 (default %(default)s)")
  common.add_argument("--dry-run", action="store_true", help="print the commands, one per line, run nothing")
  parser = OneLineParser(prog="tpu_vm.py", description=__doc__, epilog="See docs/tpu_vm.md.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
  sub = {name: commands.add_parser(name, parents=[common], help=text, description=text)
         for name, text in SUBCOMMANDS.items()}
  for subparser in sub.values():
    subparser.error = parser.error  # one-line errors in subcommands too
  for name in ("create", "launch"):
    sub[name].add_argument("--version", default="auto",
                           help="TPU software version (default: Google's JAX choice for the generation)")
    capacity = sub[name].add_mutually_exclusive_group()
    capacity.add_argument("--spot", action="store_true", help="spot capacity (cheaper, can be preempted)")
    capacity.add_argument("--preemptible", action="store_true", help="preemptible capacity (older form)")
  for name in ("install", "launch"):
    sub[name].add_argument("--repo", default="https://github.com/ORG/jaxlab", help="git URL of jaxlab")
    sub[name].add_argument("--ref", default="main", help="branch, tag or commit to check out")
  for name in ("train", "launch"):
    sub[name].add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                           help="environment variable for the training processes (repeatable)")
    sub[name].add_argument("--detach", action="store_true",
                           help="leave the run going in the background (then use `logs`)")
  for name in ("collect", "launch"):
    sub[name].add_argument("--logs", default="logs/tpu", help="local directory for logs and the workdir")
  sub["logs"].add_argument("--worker", type=int, default=0, help="which worker's log (default 0)")
  return parser.parse_args(argv)


def plan(args, train_args: list[str]) -> list[str]:
  if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", args.name):
    raise LaunchError(f"--name '{args.name}' must be lowercase letters, digits and hyphens, starting "
                      "with a letter")
  count = workers(args.accelerator_type)
  for pair in getattr(args, "env", []):
    if "=" not in pair or not pair.split("=", 1)[0].isidentifier():
      raise LaunchError(f"--env takes KEY=VALUE, got '{pair}'")
  if args.command == "logs" and not 0 <= args.worker < count:
    raise LaunchError(f"--worker {args.worker} is not a worker of {args.accelerator_type} (0..{count - 1})")
  if args.command in ("train", "launch"):
    check_train_args(train_args)
  if args.command == "collect":
    check_train_args(train_args, required=("--workdir",))
  steps = {
      "create": lambda: create_lines(args),
      "install": lambda: install_lines(args),
      "train": lambda: train_lines(args, train_args),
      "logs": lambda: logs_lines(args),
      "collect": lambda: collect_lines(args, train_args),
      "delete": lambda: delete_lines(args),
  }
  if args.command == "launch":
    lines = create_lines(args) + install_lines(args) + train_lines(args, train_args)
    return lines if args.detach else lines + collect_lines(args, train_args)
  return steps[args.command]()


def main(argv=None) -> int:
  launcher_args, train_args = split_train_args(sys.argv[1:] if argv is None else argv)
  args = parse_args(launcher_args)
  try:
    lines = plan(args, train_args)
  except LaunchError as e:
    fail(str(e))
  if args.dry_run:
    print_lines(lines)
    return 0
  return run_in_order(lines)


if __name__ == "__main__":
  sys.exit(main())
