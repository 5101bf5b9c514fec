"""What jaxlab's command lines share: bad input ends with one line `error: ...` and exit status
2, and a bad --config file or --config.KEY override is reported that way too, not as a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

from absl import flags


def fail(message: str, status: int = 2) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def parse_config_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (pass as `app.run(main, flags_parser=...)`) for commands with a --config
  file: unknown override keys and config-file errors become one line."""
  from jaxlab import config as config_lib  # pylint: disable=import-outside-toplevel

  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  try:
    if spec is not None:
      config_lib.check_override_keys(config_lib.load_config_file(spec), argv)
    return flags.FLAGS(argv)
  except config_lib.ConfigError as e:
    fail(str(e))
  except flags.Error as e:
    fail(str(e).splitlines()[0])
