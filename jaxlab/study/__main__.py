"""Command line: python -m jaxlab.study --config=configs/bocb/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

Runs every cell of the study that has no results row yet (resuming programs from their
checkpoints), then writes the report (report.md and figures) into the workdir. Bad input ends
with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from jaxlab.cli import fail, parse_config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file, path[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for tables, checkpoints and the report.")
_REPORT = flags.DEFINE_bool("report", True, "Write report.md and its figures at the end.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _WORKDIR.value:
    fail("both --config=FILE.py[:ARG] and --workdir=DIR are required")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every file it writes at INFO
    logging.set_verbosity(logging.WARNING)
  from jaxlab.config import ConfigError  # pylint: disable=import-outside-toplevel
  from jaxlab.study import report, runner  # pylint: disable=import-outside-toplevel
  from jaxlab.workdir import WorkdirError  # pylint: disable=import-outside-toplevel

  try:
    rows = runner.run_study(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, WorkdirError) as e:
    fail(str(e))
  print(f"results: {len(rows)} cells in {_WORKDIR.value}/results.csv")
  if _REPORT.value:
    print(f"report: {report.build(_WORKDIR.value)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_config_flags)
