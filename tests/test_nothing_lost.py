"""Nothing the user made is lost: another run's checkpoints are refused, not set aside; only a
step proven unreadable is set aside; a cut metrics line, a damaged init_from source and a dataset
that is not there end in one line."""

import json
import shutil

import pytest

from jaxlab import trainer
from jaxlab.checkpoint import CheckpointMismatch
from jaxlab.config import load_config_file
from jaxlab.metrics.writers import read_jsonl
from jaxlab.stages import InitFromError


def _config(total_steps, **optim):
  config = load_config_file("configs/quickstart.py")
  config.total_steps, config.checkpoint_every_steps, config.keep_checkpoints = total_steps, 10, 5
  config.log_every_steps, config.eval_every_steps = 10, total_steps
  for key, value in optim.items():
    config.optim[key] = value
  return config


def _listing(workdir):
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))


def test_another_runs_checkpoints_are_refused_and_nothing_is_touched(tmp_path, capsys):
  trainer.train_and_evaluate(_config(20), tmp_path)
  before, config_json = _listing(tmp_path), (tmp_path / "config.json").read_text()
  with pytest.raises(CheckpointMismatch) as refused:
    trainer.train_and_evaluate(_config(30, name="adamw", hparams={}), tmp_path)
  message = str(refused.value)
  assert "\n" not in message
  assert message.startswith(f"{tmp_path / 'checkpoints'} holds checkpoints of another run (step 20")
  assert ("config keys that differ from it: eval_every_steps, optim.hparams.momentum, "
          "optim.hparams.nesterov, optim.hparams.weight_decay, optim.name, total_steps)") in message
  assert f"--config.init_from.path={tmp_path}" in message
  assert _listing(tmp_path) == before  # no damaged-N, no new files
  assert (tmp_path / "config.json").read_text() == config_json
  capsys.readouterr()
  trainer.train_and_evaluate(_config(30), tmp_path)  # the original run goes on
  out, err = capsys.readouterr()
  assert "resumed from step 20" in out + err and "damaged" not in err


def test_only_the_unreadable_step_is_set_aside(tmp_path, capsys):
  trainer.train_and_evaluate(_config(30), tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / "30" / "default")  # the item folder is gone
  capsys.readouterr()
  trainer.train_and_evaluate(_config(40), tmp_path)
  out, err = capsys.readouterr()
  assert err.count("is damaged") == 1 and f"{tmp_path / 'checkpoints' / '30'} is damaged" in err
  assert "resumed from step 20" in out + err
  assert "Traceback" not in err and "Event loop is closed" not in err
  names = {p.name for p in (tmp_path / "checkpoints").iterdir()}
  assert {"10", "20", "40", "damaged-30"} <= names  # the intact older steps stay where they were


def test_a_metrics_line_cut_by_a_kill_is_dropped_with_a_warning(tmp_path, capsys):
  trainer.train_and_evaluate(_config(20), tmp_path)
  with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 21, "train/lo')  # what a SIGKILL mid-write leaves
  capsys.readouterr()
  trainer.train_and_evaluate(_config(30), tmp_path)
  _, err = capsys.readouterr()
  assert "dropped 1 unreadable line(s)" in err
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r] == [10, 20, 30]


def test_a_damaged_init_from_source_is_one_line_and_writes_nothing(tmp_path):
  trainer.train_and_evaluate(_config(10), tmp_path / "source")
  for path in (tmp_path / "source" / "checkpoints" / "10").rglob("*"):
    if path.is_file() and "/d/" in str(path):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  config = _config(10)
  config.init_from.path = str(tmp_path / "source")
  with pytest.raises(InitFromError, match=r"^init_from .*/10 is damaged and cannot be read \(") as e:
    trainer.train_and_evaluate(config, tmp_path / "target")
  assert "\n" not in str(e.value)
  assert not (tmp_path / "target" / "config.json").exists()
  assert not (tmp_path / "target" / "checkpoints").exists()


def test_a_dataset_that_is_not_prepared_is_one_line(tmp_path):
  import cli_runner  # pylint: disable=import-outside-toplevel
  code, _, err = cli_runner.run("configs/quickstart.py", tmp_path / "run", "--config.dataset.name=mnist",
                                "--config.dataset.download=False", data_dir=tmp_path / "tfds")
  assert code == 2 and "Traceback" not in err
  assert err.strip().splitlines()[-1].startswith(
      f"error: dataset 'mnist' is not prepared in {tmp_path / 'tfds'}")
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_chaos_script_at_ci_size_ends_bit_identical(tmp_path):
  """scripts/chaos.py at CI size (one SIGKILL at a random moment, then a damaged final checkpoint;
  test_train_cli.py kills at chosen steps and mid-save; scripts/chaos.sh runs 20 kills)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import cli_runner  # pylint: disable=import-outside-toplevel
  result = subprocess.run([sys.executable, "scripts/chaos.py", f"--workdir={tmp_path}", "--kills=1",
                           "--steps=20"], cwd=cli_runner.ROOT, env=cli_runner.train_env(1),
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  summary = result.stdout.strip().splitlines()[-1]
  assert summary.startswith("kills 1, ") and "checkpoints lost 0" in summary, result.stdout
  assert "final parameters bit-identical" in summary
  assert "only step 20 was set aside" in result.stdout
