"""End-to-end runs of `python -m jaxlab.train`: bad input, mesh agreement, resume after SIGKILL."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest

from cli_runner import run, start
from multihost_reference import replay_losses
from jaxlab.metrics.writers import read_jsonl

QUICKSTART = "configs/quickstart.py"
SHORT = ("--config.total_steps=30", "--config.log_every_steps=1", "--config.eval_every_steps=30",
         "--config.checkpoint_every_steps=10")


@pytest.fixture(scope="module")
def data_dir(tfds_data_dir):
  return tfds_data_dir


BAD_INPUTS = [
    (("--config.optim.lrr=0.1",), "unknown config key 'optim.lrr'; valid keys under 'optim':"),
    (("--config.nope=1",), "unknown config key 'nope'; valid keys at the top level:"),
    (("--config.batch_size=abc",), "--config.batch_size=abc"),
    (("--config.batch_size=-8",), "config.batch_size must be a positive integer"),
    (("--config.batch_size=100", "--config.mesh.data=8"), "must be divisible by mesh.data*mesh.fsdp"),
    (("--config.mesh.data=3",), "needs 3 devices but 8 are available"),
    (("--config.model.name=resnet9000",), "unknown model 'resnet9000'; valid:"),
    (("--config.dataset.name=nosuchdata",), "unknown dataset 'nosuchdata'"),
    (("--config.optim.name=adamx",), "unknown config.optim.name 'adamx'; valid: adabelief, adabound, adadelta"),
    (("--config.num_epochs=2", "--config.total_steps=100"),
     "config.total_steps=100 and config.num_epochs=2.0 are both set; set one (the other to None)"),
    (("--config.optim.lr_multipliers=((\"^nothing/\", 2.0),)",),
     "config.optim.lr_multipliers pattern '^nothing/' matches no parameter"),
]


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, data_dir):
  procs = []
  for i, (overrides, _) in enumerate(BAD_INPUTS):
    procs.append(start(QUICKSTART, tmp_path / f"run{i}", *overrides, devices=8, data_dir=data_dir))
  for (overrides, expected), proc in zip(BAD_INPUTS, procs):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (overrides, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (overrides, err)
    assert not out.strip(), out
  assert not any(tmp_path.iterdir()), "a failed run wrote into its workdir"


def test_an_input_too_small_for_the_model_is_one_line_before_compiling(tmp_path, data_dir):
  """convnext_tiny downsamples by 32: the 8x8 digits vanish. Found when the run is built, not as
  a NaN loss after compiling."""
  code, out, err = run(QUICKSTART, tmp_path / "run", "--config.model.name=convnext_tiny", data_dir=data_dir)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err[-3000:]
  assert lines[0] == ("error: config.dataset.image_size: model 'convnext_tiny' reduces 8x8 images to an "
                      "empty feature map; it needs at least 32x32 (set config.dataset.image_size=32 or larger)")
  assert not (tmp_path / "run").exists()


def test_a_repeated_run_loads_its_programs_from_the_compilation_cache(tmp_path, data_dir):
  cache = tmp_path / "cache"
  args = ("--config.total_steps=2", "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2")
  code, _, err = run(QUICKSTART, tmp_path / "first", *args, data_dir=data_dir,
                     JAXLAB_COMPILATION_CACHE=str(cache))
  assert code == 0, err[-3000:]
  written = sorted(p.name for p in cache.iterdir())
  assert written  # initialisation, train step, evaluation
  code, _, err = run(QUICKSTART, tmp_path / "again", *args, data_dir=data_dir,
                     JAXLAB_COMPILATION_CACHE=str(cache))
  assert code == 0, err[-3000:]
  assert sorted(p.name for p in cache.iterdir()) == written  # every program was found there
  # "off" wins over the config key.
  code, _, err = run(QUICKSTART, tmp_path / "off", *args, f"--config.compilation_cache_dir={tmp_path / 'other'}",
                     data_dir=data_dir, JAXLAB_COMPILATION_CACHE="off")
  assert code == 0 and not (tmp_path / "other").exists(), err[-3000:]


def _losses(workdir):
  return np.array([r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r])


def test_loss_curves_agree_across_meshes(tmp_path, data_dir):
  meshes = {
      "single": (1, ()),
      "data8": (8, ("--config.mesh.data=8",)),
      "fsdp8": (8, ("--config.mesh.data=1", "--config.mesh.fsdp=8")),
      "2x2x2": (8, ("--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")),
  }
  # Prepare the embedded dataset once, then run the meshes two at a time (2 CPU cores).
  results = {}
  names = list(meshes)
  for pair in (names[:2], names[2:]):
    procs = {n: start(QUICKSTART, tmp_path / n, *SHORT, *meshes[n][1], devices=meshes[n][0],
                      data_dir=data_dir) for n in pair}
    for n, proc in procs.items():
      out, err = proc.communicate(timeout=600)
      assert proc.returncode == 0, err[-3000:]
      results[n] = _losses(tmp_path / n)
  reference = results["single"]
  assert len(reference) == 30 and np.all(np.isfinite(reference))
  assert reference[-1] < reference[0]
  for name, losses in results.items():
    np.testing.assert_allclose(losses, reference, rtol=1e-3, err_msg=name)


def _final_tensors(workdir):
  from jaxlab.export import exported_tensors  # pylint: disable=import-outside-toplevel
  return exported_tensors(workdir / "checkpoints" / "30")


def _assert_same_run(straight, resumed):
  a_records, b_records = read_jsonl(straight / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
  assert [r["step"] for r in b_records] == [r["step"] for r in a_records]
  for a, b in zip(a_records, b_records):
    for key in ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy"):
      assert a.get(key) == b.get(key), (a["step"], key)
  a_final, b_final = _final_tensors(straight), _final_tensors(resumed)
  assert a_final.keys() == b_final.keys()
  for name in a_final:  # bit-identical parameters and batch statistics
    np.testing.assert_array_equal(a_final[name], b_final[name], err_msg=name)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("straight")
  code, _, err = run(QUICKSTART, workdir, *SHORT, data_dir=data_dir)
  assert code == 0, err[-3000:]
  return workdir


def test_sigkill_at_a_random_step_then_restart_is_bit_identical(tmp_path, data_dir, straight_run):
  seed = int.from_bytes(os.urandom(4), "little")
  kill_at = random.Random(seed).randint(2, 29)
  code, _, _ = run(QUICKSTART, tmp_path / "killed", *SHORT, data_dir=data_dir,
                   JAXLAB_SIGKILL_AT_STEP=str(kill_at))
  assert code == -signal.SIGKILL, f"kill_at={kill_at}"
  # Checkpoints every 10 steps, saved asynchronously: a kill just after a save began (kill_at=11)
  # may cut it short, so the restart resumes from the last checkpoint that was finalized (Orbax
  # renames it to its step number when complete), or afresh.
  checkpoints = tmp_path / "killed" / "checkpoints"
  finalized = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.exists() else []
  assert all(s < kill_at and s % 10 == 0 for s in finalized), (kill_at, finalized)
  if kill_at > 20:  # the step-10 save had ten steps to finish
    assert 10 in finalized, (kill_at, finalized)
  code, out, err = run(QUICKSTART, tmp_path / "killed", *SHORT, data_dir=data_dir)
  assert code == 0, err[-3000:]
  if finalized:
    assert f"resumed from step {max(finalized)} " in err + out, (kill_at, finalized)
  else:
    assert "resumed from step" not in err + out, kill_at
  _assert_same_run(straight_run, tmp_path / "killed")


def test_sigkill_during_an_async_save_resumes_from_the_previous_checkpoint(tmp_path, data_dir, straight_run):
  workdir = tmp_path / "killed"
  code, _, _ = run(QUICKSTART, workdir, *SHORT, data_dir=data_dir, JAXLAB_SIGKILL_DURING_SAVE_OF_STEP="20")
  assert code == -signal.SIGKILL
  # The save of step 20 was cut short: only Orbax's temporary directory for it, if anything.
  assert not (workdir / "checkpoints" / "20").exists()
  code, out, err = run(QUICKSTART, workdir, *SHORT, data_dir=data_dir)
  assert code == 0, err[-3000:]
  assert "resumed from step 10" in err + out and "damaged" not in err
  _assert_same_run(straight_run, workdir)


def test_quickstart_reaches_97_percent(tmp_path, data_dir):
  code, out, err = run(QUICKSTART, tmp_path / "quickstart", data_dir=data_dir)
  assert code == 0, err[-3000:]
  line = next(l for l in out.splitlines() if l.startswith("test accuracy:"))
  assert float(line.split(":")[1]) >= 0.97, out
  assert (tmp_path / "quickstart" / "config.json").exists()
  assert any((tmp_path / "quickstart" / "tensorboard").iterdir())
  assert (tmp_path / "quickstart" / "checkpoints" / "600").is_dir()
  records = read_jsonl(tmp_path / "quickstart" / "metrics.jsonl")
  assert {"step", "train/loss", "train/accuracy", "lr"} <= set(records[0])
  assert {"eval/loss", "eval/accuracy"} <= set(records[-1])
  assert records[-1]["step"] == 600


def test_two_processes_train_one_model(tmp_path, data_dir):
  """Two processes on localhost (4 simulated devices each) form one 8-device mesh, as two hosts would."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "two_hosts"
  procs = [start(QUICKSTART, workdir, *SHORT, "--config.mesh.data=4", "--config.mesh.fsdp=2",
                 "--multihost", f"--coordinator_address=localhost:{port}", "--num_processes=2",
                 f"--process_id={i}", devices=4, data_dir=data_dir) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
  assert "test accuracy:" in outs[0][0] and "test accuracy:" not in outs[1][0]  # process 0 reports
  losses = _losses(workdir)
  assert len(losses) == 30 and losses[-1] < losses[0]
  assert (workdir / "checkpoints" / "30").is_dir()
  # Each process's batches side by side, trained in one process on one device: the same losses.
  np.testing.assert_allclose(losses, replay_losses(QUICKSTART, SHORT, num_processes=2), rtol=1e-3)


def _wait_for_step(workdir, step, proc, timeout=300):
  import time  # pylint: disable=import-outside-toplevel
  deadline = time.time() + timeout
  while time.time() < deadline:
    path = workdir / "metrics.jsonl"
    if path.exists() and any(r["step"] >= step for r in read_jsonl(path)):
      return
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.2)
  raise TimeoutError(f"no step {step} in {workdir}")


def test_sigterm_saves_and_exits_then_resumes_and_lock_refuses_a_second_run(tmp_path, data_dir):
  workdir = tmp_path / "preempted"
  args = ("--config.total_steps=1000", "--config.log_every_steps=10", "--config.checkpoint_every_steps=5000",
          "--config.eval_every_steps=5000")
  first = start(QUICKSTART, workdir, *args, data_dir=data_dir)
  _wait_for_step(workdir, 30, first)
  # A second run on the same workdir is refused while the first holds it.
  code, out, err = run(QUICKSTART, workdir, *args, data_dir=data_dir)
  assert code == 2 and err.strip().startswith("error: workdir") and "in use by another run" in err, err
  first.send_signal(signal.SIGTERM)
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  saved = int(out.split("preempted: saved step ")[1].split()[0])
  assert 30 <= saved < 1000
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())[-1] == saved
  # A short way on is enough to show the resume (the rest of the 1000 steps only costs time).
  code, out, err = run(QUICKSTART, workdir, *args, f"--config.total_steps={saved + 20}", data_dir=data_dir)
  assert code == 0, err[-3000:]
  assert f"resumed from step {saved}" in err + out
  steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  assert steps == sorted(set(steps)) and steps[-1] == saved + 20


def test_two_stages_script_runs_end_to_end(tmp_path, data_dir):
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  from cli_runner import ROOT, train_env  # pylint: disable=import-outside-toplevel
  env = train_env(1, data_dir, VIRTUAL_ENV=os.environ.get("VIRTUAL_ENV", "tests"))
  result = subprocess.run(["bash", "scripts/two_stages.sh", str(tmp_path), "20"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count("test accuracy:") == 2
  assert f"initialised 15 arrays from {tmp_path / 'pretrain' / 'checkpoints' / '20'}" in result.stderr


def test_sigterm_on_one_of_two_hosts_stops_both_at_the_same_step(tmp_path, data_dir):
  """JAX's preemption sync: the host that gets SIGTERM and the one that does not save the same step."""
  import socket  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "two_hosts"
  args = ("--config.total_steps=1000", "--config.log_every_steps=5", "--config.checkpoint_every_steps=5000",
          "--config.eval_every_steps=5000", "--config.mesh.data=8")

  def start_both(*extra):
    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    return [start(QUICKSTART, workdir, *args, *extra, "--multihost", f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}", devices=4, data_dir=data_dir) for i in range(2)]

  procs = start_both()
  _wait_for_step(workdir, 20, procs[0])
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=300) for p in procs]
  for proc, (_, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
  saved = int(outs[0][0].split("preempted: saved step ")[1].split()[0])
  assert 20 <= saved < 1000
  assert [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == [saved]
  procs = start_both(f"--config.total_steps={saved + 5}")  # a short way on is enough to show the resume
  outs = [p.communicate(timeout=600) for p in procs]
  for proc, (_, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
  assert f"resumed from step {saved}" in outs[0][0] + outs[0][1]
