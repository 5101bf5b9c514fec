"""jaxlab: sharded pure-functional training for vision research on JAX/Flax."""

import os

# TensorFlow (used for tf.data only) prints start-up banners on stderr at import; keep stderr for
# errors. oneDNN matters for TF's own math, not for the input pipeline's image ops.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
