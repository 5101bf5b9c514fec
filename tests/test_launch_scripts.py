"""The launch scripts: --help, --dry-run commands for a 4-worker TPU slice and for 2 hosts × 8 GPUs,
the SLURM example's ids, one-line errors, real (non-dry) runs against stand-in gcloud/python, and
the docs' examples (docs/gpu_hosts.md, and docs/mesh.md's table from scripts/mesh_plan.py).

The two-process localhost run that must match the single-process loss is
tests/test_train_cli.py::test_two_processes_train_one_model (with tests/multihost_reference.py).
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TRAIN = ("--config=configs/cifar10_resnet18.py", "--workdir=/shared/workdirs/r18", "--config.optim.lr=0.2")


def _script(name: str, *args: str, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=60, check=False)


def _dry_run(name: str, *args: str) -> list[str]:
  result = _script(name, *args)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for line in lines:  # every line is one valid bash command
    assert subprocess.run(["bash", "-n", "-c", line], check=False).returncode == 0, line
  return lines


def _flag(line: str, flag: str) -> str:
  values = re.findall(rf"{flag}=(\S+)", line)
  assert len(values) == 1, (flag, line)
  return values[0]


def _remote_command(line: str) -> str:
  """The --command=... a `gcloud ... tpu-vm ssh` line runs on the workers (checked for syntax)."""
  command = next(a.split("=", 1)[1] for a in shlex.split(line) if a.startswith("--command="))
  assert subprocess.run(["bash", "-n", "-c", command], check=False).returncode == 0, command
  return command


@pytest.mark.parametrize("args,expected", [
    (("tpu_vm.py", "--help"), "--dry-run"), (("tpu_vm.py", "launch", "--help"), "--dry-run"),
    (("gpu_hosts.py", "--help"), "--dry-run"), (("mesh_plan.py", "--help"), "--mesh")],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_help(args, expected):
  result = _script(*args)
  assert result.returncode == 0 and expected in result.stdout and "usage:" in result.stdout


def test_tpu_v4_32_launch_dry_run():
  lines = _dry_run("tpu_vm.py", "launch", "--name=jaxlab-v4", "--zone=us-central2-b", "--project=my-proj",
                   "--accelerator-type=v4-32", "--spot", "--ref=v0.1.0", "--dry-run", "--",
                   "--config=configs/cifar10_resnet18.py", "--workdir=gs://my-bucket/workdirs/r18",
                   "--config.mesh.fsdp=4")
  # create (or reuse), install, train, 4 log copies, the workdir.
  assert len(lines) == 1 + 1 + 1 + 4 + 1, "\n".join(lines)
  create, install, train, *collect = lines
  tpu = "gcloud compute tpus tpu-vm"
  assert f"{tpu} describe jaxlab-v4 --zone=us-central2-b --project=my-proj" in create
  assert (f"{tpu} create jaxlab-v4 --zone=us-central2-b --project=my-proj --accelerator-type=v4-32 "
          "--version=tpu-ubuntu2204-base --spot") in create
  assert "PREEMPTED" in create  # a preempted spot VM is deleted and created again

  assert install.startswith(f"{tpu} ssh jaxlab-v4 --zone=us-central2-b --project=my-proj --worker=all ")
  command = _remote_command(install)
  assert "git clone -q https://github.com/ORG/jaxlab ~/jaxlab" in command
  assert "fetch -q origin v0.1.0" in command
  assert "uv pip install -q --python ~/jaxlab/.venv/bin/python -e ~/jaxlab 'jax[tpu]'" in command

  assert train.startswith(f"{tpu} ssh jaxlab-v4 --zone=us-central2-b --project=my-proj --worker=all ")
  command = _remote_command(train)
  assert "gcsfuse -o rw --implicit-dirs --rename-dir-limit=200000 my-bucket ~/gcs/my-bucket" in command
  run = command[command.index("cd ~/jaxlab && "):]
  assert run == ('cd ~/jaxlab && ~/jaxlab/.venv/bin/python -m jaxlab.train --config=configs/cifar10_resnet18.py '
                 '--config.mesh.fsdp=4 --workdir="$HOME/gcs/my-bucket/workdirs/r18" --multihost '
                 "2>&1 | tee -a ~/jaxlab-logs/train.log")
  # On TPU VMs jax.distributed.initialize() finds coordinator, count and id itself: none are given.
  for flag in ("--coordinator_address", "--num_processes", "--process_id"):
    assert flag not in command

  for worker, line in enumerate(collect[:4]):
    assert line == (f"mkdir -p logs/tpu/jaxlab-v4/worker-{worker} && {tpu} scp --zone=us-central2-b "
                    f"--project=my-proj --worker={worker} 'jaxlab-v4:~/jaxlab-logs/train.log' "
                    f"logs/tpu/jaxlab-v4/worker-{worker}/")
  assert collect[4] == "gcloud storage rsync --recursive gs://my-bucket/workdirs/r18 logs/tpu/jaxlab-v4/workdir"


def test_tpu_single_host_local_workdir_is_copied_back_and_detach_runs_in_background():
  args = ("--name=one", "--zone=us-west4-a", "--accelerator-type=v5litepod-8", "--dry-run")
  create, _, train = _dry_run("tpu_vm.py", "launch", *args, "--detach", "--",
                              "--config=configs/quickstart.py", "--workdir=workdirs/q")
  assert "--accelerator-type=v5litepod-8 --version=v2-alpha-tpuv5-lite" in create
  assert "--spot" not in create and "--preemptible" not in create
  command = _remote_command(train)
  assert "gcsfuse" not in command
  assert command.endswith("cd ~/jaxlab && setsid nohup ~/jaxlab/.venv/bin/python -m jaxlab.train "
                          "--config=configs/quickstart.py --workdir=workdirs/q --multihost "
                          ">> ~/jaxlab-logs/train.log 2>&1 < /dev/null &")
  logs, workdir = _dry_run("tpu_vm.py", "collect", *args, "--", "--workdir=workdirs/q")
  assert "--worker=0 'one:~/jaxlab-logs/train.log' logs/tpu/one/worker-0/" in logs
  assert workdir.endswith("--worker=0 --recurse 'one:~/jaxlab/workdirs/q' logs/tpu/one/workdir")
  follow, = _dry_run("tpu_vm.py", "logs", *args)
  assert _remote_command(follow) == "tail -n 200 -F ~/jaxlab-logs/train.log"
  delete, = _dry_run("tpu_vm.py", "delete", *args)
  assert delete == "gcloud compute tpus tpu-vm delete one --zone=us-west4-a --quiet"


def test_tpu_workers_per_accelerator_type():
  sys.path.insert(0, str(SCRIPTS))
  try:
    import tpu_vm  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(str(SCRIPTS))
  # Hosts per slice from Google's TPU topology tables (cloud.google.com/tpu/docs, v4/v5e/v5p/v6e pages).
  expected = {"v2-8": 1, "v3-32": 4, "v4-8": 1, "v4-32": 4, "v4-128": 16, "v5p-8": 1, "v5p-128": 16,
              "v5litepod-4": 1, "v5litepod-8": 1, "v5litepod-16": 4, "v5litepod-256": 64, "v6e-8": 1,
              "v6e-16": 4}
  assert {t: tpu_vm.workers(t) for t in expected} == expected


def _gpu_processes(lines):
  parsed = []
  for line in lines:
    host, remote = shlex.split(line)[3:5]  # ssh -o BatchMode=yes HOST 'REMOTE' > LOG 2>&1
    log = line.rsplit(" > ", 1)[1]
    parsed.append({"host": host, "remote": remote, "log": log, "id": int(_flag(remote, "--process_id")),
                   "count": int(_flag(remote, "--num_processes")),
                   "coordinator": _flag(remote, "--coordinator_address"),
                   "gpu": (re.findall(r"CUDA_VISIBLE_DEVICES=(\d+)", remote) or [None])[0]})
  return parsed


def test_gpu_hosts_per_gpu_two_hosts_of_eight():
  lines = _dry_run("gpu_hosts.py", "--hosts=gpu0,gpu1", "--gpus-per-host=8", "--per-gpu", "--port=23456",
                   "--python=.venv/bin/python", "--log-dir=logs/r18", "--dry-run", "--", *TRAIN)
  processes = _gpu_processes(lines)
  assert [p["id"] for p in processes] == list(range(16))
  assert {p["count"] for p in processes} == {16}
  assert {p["coordinator"] for p in processes} == {"gpu0:23456"}
  assert [p["host"] for p in processes] == ["gpu0"] * 8 + ["gpu1"] * 8
  assert [p["gpu"] for p in processes] == [str(g) for g in range(8)] * 2
  assert [p["log"] for p in processes] == [f"logs/r18/process-{i}.log 2>&1" for i in range(16)]
  assert processes[11]["remote"] == (
      "cd ~/jaxlab && exec env CUDA_VISIBLE_DEVICES=3 .venv/bin/python -m jaxlab.train "
      "--config=configs/cifar10_resnet18.py --workdir=/shared/workdirs/r18 --config.optim.lr=0.2 "
      "--multihost --coordinator_address=gpu0:23456 --num_processes=16 --process_id=11")


def test_gpu_hosts_per_host_two_hosts():
  lines = _dry_run("gpu_hosts.py", "--hosts=gpu0,gpu1", "--coordinator-host=10.0.0.1", "--env=NCCL_DEBUG=WARN",
                   "--dry-run", "--", *TRAIN)
  processes = _gpu_processes(lines)
  assert [(p["host"], p["id"], p["count"], p["gpu"]) for p in processes] == [("gpu0", 0, 2, None),
                                                                             ("gpu1", 1, 2, None)]
  assert {p["coordinator"] for p in processes} == {"10.0.0.1:12345"}
  assert processes[1]["remote"].startswith("cd ~/jaxlab && exec env NCCL_DEBUG=WARN python3 -m jaxlab.train ")


BAD_INPUTS = [
    (("gpu_hosts.py", "--hosts=a,a", "--", *TRAIN), "--hosts names a host twice"),
    (("gpu_hosts.py", "--hosts=a", "--gpus-per-host=0", "--", *TRAIN), "--gpus-per-host must be at least 1"),
    (("gpu_hosts.py", "--hosts=a", "--", "--workdir=w"), "need --config="),
    (("gpu_hosts.py", "--hosts=a", "--", *TRAIN, "--process_id=3"), "--process_id is set by the launcher"),
    (("gpu_hosts.py", "--hosts=a", "--env=oops", "--", *TRAIN), "--env takes KEY=VALUE"),
    (("gpu_hosts.py", "--hosts=a", "--bogus"), "unrecognized arguments: --bogus"),
    (("gpu_hosts.py",), "the following arguments are required: --hosts"),
    (("tpu_vm.py", "launch", "--name=t", "--zone=z", "--accelerator-type=v9-8", "--", *TRAIN),
     "unknown --accelerator-type 'v9-8'; valid:"),
    (("tpu_vm.py", "train", "--name=t", "--zone=z", "--accelerator-type=v4-32", "--", *TRAIN),
     "a 4-worker slice (v4-32) needs --workdir=gs://BUCKET/PATH"),
    (("tpu_vm.py", "train", "--name=Bad_Name", "--zone=z", "--", *TRAIN), "--name 'Bad_Name' must be"),
    (("tpu_vm.py", "logs", "--name=t", "--zone=z", "--worker=2"), "--worker 2 is not a worker of v4-8"),
    (("tpu_vm.py", "create", "--name=t", "--zone=z", "--spot", "--preemptible"), "not allowed with"),
    (("tpu_vm.py", "reboot", "--name=t"), "invalid choice: 'reboot'"),
    (("tpu_vm.py", "train", "--name=t", "--zone=z", "--", "--config=c.py", "--workdir=gs://x"),
     "is not gs://BUCKET/PATH"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUTS, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in
                                                          enumerate(BAD_INPUTS)])
def test_bad_input_gives_one_line(args, expected):
  result = _script(*args)
  assert result.returncode == 2, result
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
  assert not result.stdout


def _executable(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return path


def test_tpu_launch_runs_the_printed_commands(tmp_path):
  """Without --dry-run the same commands run (here against a gcloud that records its arguments)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  # `describe` fails as for a VM that does not exist yet, so create runs; everything else succeeds.
  _executable(bin_dir / "gcloud", '#!/bin/bash\nprintf "%s\\n" "$*" >> "$GCLOUD_CALLS"\n'
                                  '[ "$5" != describe ]\n')
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_CALLS": str(tmp_path / "calls")}
  args = ("launch", "--name=t1", "--zone=us-central2-b", "--accelerator-type=v4-32", "--",
          "--config=configs/quickstart.py", "--workdir=gs://bkt/runs/q")
  result = _script("tpu_vm.py", *args, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr
  planned = _script("tpu_vm.py", *args[:-3], "--dry-run", *args[-3:], cwd=tmp_path).stdout.splitlines()
  assert result.stderr.splitlines()[0] == f"+ {planned[0]}"  # echoed before running
  calls = (tmp_path / "calls").read_text().splitlines()
  verbs = [c.split()[3] if c.startswith("compute ") else c.split()[0] for c in calls]
  assert verbs == ["describe", "create", "ssh", "ssh", "scp", "scp", "scp", "scp", "storage"], calls
  for planned_line, call in zip(planned[1:3], calls[2:4]):  # install and train: exactly as printed
    assert call == " ".join(shlex.split(planned_line)[1:])
  assert (tmp_path / "logs" / "tpu" / "t1" / "worker-3").is_dir()


def test_gpu_hosts_runs_every_process_and_reports_a_failure(tmp_path):
  """A real launch on localhost, with a stand-in Python that prints its arguments (no training)."""
  fake_python = _executable(tmp_path / "python", '#!/bin/bash\necho "gpu=$CUDA_VISIBLE_DEVICES $*"\n'
                                                 'case "$*" in *"--process_id=$FAIL_ID"*) exit 3;; esac\n')
  args = ("--hosts=localhost", "--gpus-per-host=3", "--per-gpu", f"--repo={tmp_path}",
          f"--python={fake_python}", "--log-dir=logs", "--env=FAIL_ID=none", "--", *TRAIN)
  result = _script("gpu_hosts.py", *args, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  for i in range(3):
    log = (tmp_path / "logs" / f"process-{i}.log").read_text()
    assert log.startswith(f"gpu={i} -m jaxlab.train --config=configs/cifar10_resnet18.py") and \
        f"--num_processes=3 --process_id={i}" in log
  assert "--process_id=0" in result.stdout  # process 0's output is shown as it arrives

  failing = tuple(a if not a.startswith("--env=") else "--env=FAIL_ID=2" for a in args)
  result = _script("gpu_hosts.py", *failing, cwd=tmp_path)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: process 2 exited with status 3 (1 of 3 failed); its log: logs/process-2.log")


FAKE_SRUN = """#!/bin/bash
# Stands in for srun: runs the command once per task, node-major, with the task's SLURM variables.
while [[ "$1" == --* ]]; do shift; done
for ((node = 0; node < SLURM_NNODES; node++)); do
  for ((local = 0; local < SLURM_NTASKS_PER_NODE; local++)); do
    SLURM_PROCID=$((node * SLURM_NTASKS_PER_NODE + local)) SLURM_LOCALID=$local "$@" || exit $?
  done
done
"""


@pytest.mark.parametrize("tasks_per_node", [8, 1], ids=["per_gpu", "per_node"])
def test_slurm_example_derives_coordinator_and_ids(tmp_path, tasks_per_node):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "srun", FAKE_SRUN)
  _executable(bin_dir / "scontrol", '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a\\ngpu-b\\n"\n')
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_"))}
  env.update(PATH=f"{bin_dir}:{env['PATH']}", JAXLAB_DRY_RUN="1", SLURM_SUBMIT_DIR=str(tmp_path),
             SLURM_JOB_ID="1234", SLURM_JOB_NODELIST="gpu-[a-b]", SLURM_NNODES="2",
             SLURM_NTASKS=str(2 * tasks_per_node), SLURM_NTASKS_PER_NODE=str(tasks_per_node))
  result = subprocess.run(["bash", str(SCRIPTS / "slurm_example.sbatch"), *TRAIN], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 2 * tasks_per_node
  port = 1234 % 4096 + 61440  # JAX's SlurmCluster port rule for job 1234
  for i, line in enumerate(lines):
    gpu = f"CUDA_VISIBLE_DEVICES={i % 8} " if tasks_per_node == 8 else ""
    assert line == (f"env {gpu}.venv/bin/python -m jaxlab.train {' '.join(TRAIN)} --multihost "
                    f"--coordinator_address=gpu-a:{port} --num_processes={2 * tasks_per_node} --process_id={i}")


def test_gpu_hosts_doc_example_is_what_the_launcher_prints():
  doc = (ROOT / "docs" / "gpu_hosts.md").read_text()
  lines = _dry_run("gpu_hosts.py", "--hosts=gpu0,gpu1", "--gpus-per-host=8", "--per-gpu", "--port=23456",
                   "--python=.venv/bin/python", "--log-dir=logs/r18", "--dry-run", "--", *TRAIN)
  assert f"\n{lines[11]}\n" in doc


MESHES = ("-1,1,1", "1,8,1", "2,4,1", "4,1,2", "2,2,2")


def test_mesh_plan_fsdp_divides_memory_and_docs_mesh_md_quotes_it():
  result = _script("mesh_plan.py", "--model=vit_base_patch16_224", "--devices=8", "--batch-size=1024",
                   *(f"--mesh={m}" for m in MESHES))
  assert result.returncode == 0, result.stderr
  total = float(re.search(r"parameters, ([\d.]+) MiB float32", result.stdout).group(1))
  assert total == pytest.approx(86.6e6 * 4 / 2**20, rel=0.01)  # ViT-B/16: 86.6M float32 parameters
  blocks = result.stdout.split("\nmesh ")[1:]
  assert len(blocks) == len(MESHES)
  doc_rows = {line.split("|")[1].strip().split()[0].strip("`"): line
              for line in (ROOT / "docs" / "mesh.md").read_text().splitlines() if line.startswith("| `")}
  for mesh, block in zip(MESHES, blocks):
    params, with_moments = re.search(r"parameters ([\d.]+) MiB, with 2 optimizer moments ([\d.]+) MiB",
                                     block).groups()
    batch = re.search(r"1024 global, (\d+) per", block).group(1)
    spec = re.search(r"blocks/0/mlp/fc1/kernel\s+\(768, 3072\)\s+(P\(.*\))", block).group(1)
    assert f"`{spec}` | {params} MiB | {with_moments} MiB | {batch} |" in doc_rows[mesh], (mesh, block)
    if mesh == "1,8,1":  # an eighth of every large parameter; biases and norms (<1%) stay whole
      assert total / 8 - 0.05 <= float(params) <= total / 8 * 1.02
    if mesh == "-1,1,1":
      assert float(params) == total and float(with_moments) == pytest.approx(3 * total, abs=0.2)


def test_gpu_hosts_ctrl_c_sends_sigterm_to_every_process(tmp_path):
  """Ctrl-C: each process gets one SIGTERM (jaxlab.train saves a checkpoint on it), then exit 130."""
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  fake_python = _executable(tmp_path / "python", "#!/bin/bash\ntrap 'echo got SIGTERM; exit 0' TERM\n"
                                                 "echo started\nsleep 60 & wait\n")
  launcher = subprocess.Popen(
      [sys.executable, str(SCRIPTS / "gpu_hosts.py"), "--hosts=localhost", "--gpus-per-host=2", "--per-gpu",
       f"--repo={tmp_path}", f"--python={fake_python}", "--log-dir=logs", "--", *TRAIN],
      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  logs = [tmp_path / "logs" / f"process-{i}.log" for i in range(2)]
  deadline = time.time() + 30
  while not all(log.exists() and "started" in log.read_text() for log in logs):
    assert time.time() < deadline and launcher.poll() is None
    time.sleep(0.1)
  launcher.send_signal(signal.SIGINT)
  _, err = launcher.communicate(timeout=30)
  assert launcher.returncode == 130, err
  assert err.strip().splitlines()[-1].startswith("interrupted: every process got SIGTERM; exit statuses 0: 0, 1: 0")
  assert all(log.read_text() == "started\ngot SIGTERM\n" for log in logs)
