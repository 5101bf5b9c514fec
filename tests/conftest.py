"""Every test process sees 8 simulated CPU devices; single-device tests build 1-device meshes.

The flags must be set before JAX starts its backends (and TFDS reads its data dir), so they are
set here, at collection time.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

import pytest

# TFDS reads TFDS_DATA_DIR once, at import: set before any test module imports it. The embedded
# digits get prepared there once per session instead of in the user's ~/tensorflow_datasets.
_TFDS_DIR = tempfile.mkdtemp(prefix="jaxlab-tests-tfds-")
atexit.register(shutil.rmtree, _TFDS_DIR, ignore_errors=True)
os.environ["TFDS_DATA_DIR"] = _TFDS_DIR

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The CLI runs of the tests compile afresh (one test checks the persistent compilation cache with a
# directory of its own): nothing is written to the user's ~/.cache.
os.environ["JAXLAB_COMPILATION_CACHE"] = "off"

import chex  # noqa: E402  pylint: disable=wrong-import-position
import jax  # noqa: E402  pylint: disable=wrong-import-position

chex.set_n_cpu_devices(8)
jax.config.update("jax_platforms", "cpu")


@pytest.fixture(scope="session")
def tfds_data_dir() -> pathlib.Path:
  """The session's TFDS dir with the embedded digits prepared, so the output of the runs that use
  it holds no TFDS progress bars (one-line error tests read all of stderr)."""
  from jaxlab import data  # pylint: disable=import-outside-toplevel
  config = data.default_dataset_config()
  config.data_dir = _TFDS_DIR
  data.dataset_info(config)
  return pathlib.Path(_TFDS_DIR)
