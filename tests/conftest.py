"""Every test process sees 8 simulated CPU devices; single-device tests build 1-device meshes.

The flag must be set before JAX starts its backends, so it is set here, at collection time.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import chex  # noqa: E402  pylint: disable=wrong-import-position
import jax  # noqa: E402  pylint: disable=wrong-import-position

chex.set_n_cpu_devices(8)
jax.config.update("jax_platforms", "cpu")
