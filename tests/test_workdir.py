"""A workdir that cannot be written, or that is too full for the checkpoints, fails at once."""

import collections

import pytest

from jaxlab import trainer, workdir
from jaxlab.config import load_config_file


def test_full_disk_fails_before_training_and_names_the_sizes(tmp_path, monkeypatch):
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(workdir.shutil, "disk_usage", lambda _: usage(10 * 2**20, 10 * 2**20 - 4096, 4096))
  config = load_config_file("configs/quickstart.py")
  with pytest.raises(workdir.WorkdirError, match=r"has 0.0 MiB free but 3 checkpoints of this run need") as e:
    trainer.train_and_evaluate(config, tmp_path / "run")
  assert "\n" not in str(e.value)
  assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()



def test_space_is_counted_for_the_checkpoints_the_run_writes_not_keep_checkpoints(tmp_path, monkeypatch):
  """keep_checkpoints=100000 ("keep all") asks for room for the checkpoints this run writes."""
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(workdir.shutil, "disk_usage", lambda _: usage(10 * 2**20, 10 * 2**20 - 4096, 4096))
  config = load_config_file("configs/quickstart.py")
  config.total_steps, config.checkpoint_every_steps, config.keep_checkpoints = 20, 10, 100000
  with pytest.raises(workdir.WorkdirError, match=r" 2 checkpoints of this run need"):
    trainer.train_and_evaluate(config, tmp_path / "run")

def test_workdir_that_cannot_be_created_is_one_line(tmp_path):
  (tmp_path / "file").write_text("not a directory")  # fails for root too, unlike permissions
  with pytest.raises(workdir.WorkdirError, match="is not writable: Not a directory") as e:
    workdir.claim(tmp_path / "file" / "run")
  assert "\n" not in str(e.value)
