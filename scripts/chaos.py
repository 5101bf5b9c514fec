"""Fault injection anyone can repeat: SIGKILL a training run at random moments, then check that
nothing was lost.

  python scripts/chaos.py --workdir=/tmp/chaos --kills=20 [--steps=300] [--seed=S]

1. An uninterrupted run of the quick-start config (`--steps` steps, a checkpoint every 10, all
   kept) in WORKDIR/straight; its wall time sets the kill times.
2. The same command in WORKDIR/chaos, started again and again and killed with SIGKILL at a random
   moment each time — during start-up, steps, asynchronous checkpoint writes, metric writes or
   evaluation alike — `--kills` times, then run to the end. After every kill: every checkpoint
   that was ever complete is still there, none was set aside.
3. The final parameters and batch statistics equal the uninterrupted run's bit for bit,
   metrics.jsonl parses and has the uninterrupted run's records.
4. The largest data file of the final checkpoint is truncated; the run started again sets aside
   that step only, resumes from the one before, and ends bit-identical again.

Prints one line per kill and a summary (kills, resumes, checkpoints lost); exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
_LOG_EVERY = 5


def _command(workdir: pathlib.Path, steps: int) -> list[str]:
  return [sys.executable, "-m", "jaxlab.train", "--config=configs/quickstart.py",
          f"--workdir={workdir}", f"--config.total_steps={steps}", f"--config.log_every_steps={_LOG_EVERY}",
          "--config.checkpoint_every_steps=10", "--config.eval_every_steps=50",
          "--config.keep_checkpoints=100000"]


def _finalized(workdir: pathlib.Path) -> set[int]:
  root = workdir / "checkpoints"
  return {int(p.name) for p in root.iterdir() if p.name.isdigit()} if root.is_dir() else set()


def _set_aside(workdir: pathlib.Path) -> list[str]:
  root = workdir / "checkpoints"
  return sorted(p.name for p in root.iterdir() if p.name.startswith("damaged-")) if root.is_dir() else []


def _records(workdir: pathlib.Path) -> list[dict]:
  """Every line of metrics.jsonl, strictly: a line that does not parse is a failure."""
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _last_step(workdir: pathlib.Path, this_run_only: bool, proc: subprocess.Popen,
               at_least: int = 0) -> int:
  """The last step in metrics.jsonl, once it is at least `at_least` (and, with `this_run_only`,
  once the running process has logged; a resumed run's log starts with its predecessors' lines).
  Returns early when the process ends."""
  path = workdir / "metrics.jsonl"
  size = path.stat().st_size if this_run_only and path.exists() else -1
  while proc.poll() is None:
    if path.exists() and path.stat().st_size > size:
      steps = []
      for line in path.read_text().splitlines()[-3:]:  # the last line may be half written
        try:
          steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
          pass
      if steps and steps[-1] >= at_least:
        return steps[-1]
    time.sleep(0.05)
  return at_least


def _tensors(step_dir: pathlib.Path) -> dict:
  from jaxlab.export import exported_tensors  # pylint: disable=import-outside-toplevel
  return exported_tensors(step_dir)


def _same(a: dict, b: dict) -> bool:
  import numpy as np  # pylint: disable=import-outside-toplevel
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=pathlib.Path)
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--seed", type=int, default=None)
  args = parser.parse_args()
  seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
  rng = random.Random(seed)
  straight, chaos = args.workdir / "straight", args.workdir / "chaos"
  for path in (straight, chaos):
    if path.exists():
      print(f"error: {path} exists; give a new --workdir", file=sys.stderr)
      return 2
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
  failures = []

  start, startup = time.perf_counter(), None
  args.workdir.mkdir(parents=True, exist_ok=True)
  with open(args.workdir / "straight.log", "w+", encoding="utf-8") as log:
    proc = subprocess.Popen(_command(straight, args.steps), cwd=ROOT, env=env, stdout=log, stderr=log)
    while proc.poll() is None:
      if startup is None and (straight / "metrics.jsonl").exists():
        startup = time.perf_counter() - start  # imports, data, compilation: until the first log
      time.sleep(0.05)
    if proc.returncode != 0:
      log.seek(0)
      last = (log.read().strip().splitlines() or [""])[-1]
      print(f"error: the uninterrupted run failed (exit {proc.returncode}): {last}", file=sys.stderr)
      return 1
  wall = time.perf_counter() - start
  startup = startup or wall / 2
  interval = 0.8 * (wall - startup) * _LOG_EVERY / args.steps  # a logging interval, a little less
  print(f"seed {seed}: uninterrupted run of {args.steps} steps took {wall:.1f} s "
        f"({startup:.1f} s to its first step)")

  ever, kills, resumes = set(), 0, 0
  while True:
    remaining_kills = args.kills - kills
    proc = subprocess.Popen(_command(chaos, args.steps), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if remaining_kills > 0:
      began = time.perf_counter()
      if rng.random() < 0.2:  # in start-up (imports, restore, compilation)
        delay = rng.uniform(0.05, startup)
      else:  # in training: steps, saves, metric writes, evals
        # Kill a random moment after a random logged step. Triggered by the log, not by a clock, so
        # the kill cannot miss a run that goes faster than the uninterrupted one: at least one
        # logging interval of steps, then the final evaluation and save, are still to come.
        done = _last_step(chaos, this_run_only=True, proc=proc)
        span = 2.0 * (args.steps - done) / (remaining_kills + 1)
        target = min(args.steps - _LOG_EVERY, done + int(rng.uniform(0, span)) // _LOG_EVERY * _LOG_EVERY)
        _last_step(chaos, this_run_only=False, proc=proc, at_least=target)
        delay = time.perf_counter() - began + rng.uniform(0, interval)
      try:
        proc.wait(timeout=max(0.01, delay - (time.perf_counter() - began)))
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    resumed = "resumed from step" in out + err
    resumes += resumed
    if proc.returncode == -signal.SIGKILL:
      kills += 1
      now = _finalized(chaos)
      lost = sorted(ever - now)
      ever |= now
      print(f"kill {kills:2d} after {delay:5.1f} s: checkpoints {max(now, default='-')} "
            f"({len(now)} kept){'  LOST ' + str(lost) if lost else ''}")
      if lost:
        failures.append(f"checkpoints {lost} disappeared after kill {kills}")
      if _set_aside(chaos):
        failures.append(f"set aside after kill {kills}: {_set_aside(chaos)}")
      continue
    if proc.returncode != 0:
      failures.append(f"the run failed (exit {proc.returncode}): {err.strip().splitlines()[-1:]}")
    break

  final = chaos / "checkpoints" / str(args.steps)
  reference = _tensors(straight / "checkpoints" / str(args.steps))
  if not failures:
    lost = sorted(ever - _finalized(chaos))
    if lost:
      failures.append(f"checkpoints {lost} disappeared")
    if not _same(_tensors(final), reference):
      failures.append("final parameters differ from the uninterrupted run's")
    keys = ("step", "train/loss", "train/accuracy", "eval/loss", "eval/accuracy")
    try:
      got = [{k: r.get(k) for k in keys} for r in _records(chaos)]
      if got != [{k: r.get(k) for k in keys} for r in _records(straight)]:
        failures.append("metrics.jsonl differs from the uninterrupted run's")
    except json.JSONDecodeError as e:
      failures.append(f"metrics.jsonl does not parse: {e}")

  # A damaged final checkpoint: only it is set aside, and the run ends the same again.
  if not failures:
    # The largest data file holds arrays every restore reads (Orbax also keeps files that no
    # restore reads: damaging one of those changes nothing, rightly).
    victim = max((p for p in final.rglob("*") if p.is_file() and "/d/" in str(p)),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    result = subprocess.run(_command(chaos, args.steps), cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    before = _finalized(chaos)
    if result.returncode != 0:
      failures.append(f"restart after damage failed: {result.stderr.strip().splitlines()[-1:]}")
    elif _set_aside(chaos) != [f"damaged-{args.steps}"]:
      failures.append(f"set aside after damaging step {args.steps}: {_set_aside(chaos)}")
    elif (ever - {args.steps}) - before:
      failures.append(f"intact checkpoints disappeared: {sorted((ever - {args.steps}) - before)}")
    elif not _same(_tensors(final), reference):
      failures.append("parameters after recovering from the damaged step differ")
    else:
      print(f"damaged {victim.relative_to(chaos)}: only step {args.steps} was set aside; "
            "resumed from the one before and ended bit-identical")

  print(f"kills {kills}, resumes {resumes}, checkpoints ever complete {len(ever)}, "
        f"checkpoints lost {len(ever - _finalized(chaos) - {args.steps})}, "
        f"final parameters {'bit-identical' if not failures else 'NOT checked/identical'}")
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
