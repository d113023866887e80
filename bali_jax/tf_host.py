"""TensorFlow for the host side only (record reading and writing, gfile
URLs), imported in one place.

Why a module: every `train`, `data_prep` and `bench` start imports
TensorFlow for tf.data / tensorflow-datasets, and TensorFlow's own import
eagerly loads Keras' optimizers (to register them for SavedModel loading,
which we never do): 1.7 s of the 5 s import (2.21.0, measured 5.1-5.7 s
against 3.4-3.9 s). Importing through `host_tf()` skips that one module;
`tf.keras` stays a lazy loader that imports Keras in full on first use.
TensorFlow is also kept off the accelerators, which belong to JAX.
"""

from __future__ import annotations

import functools
import sys

# TensorFlow 2.21's __init__ imports this module inside `try: ... except
# ImportError: pass`; a None entry in sys.modules makes that import raise
# ImportError, and the entry is removed right after.
_KERAS_EAGER = "keras.src.optimizers"


@functools.cache
def host_tf():
  """The `tensorflow` module, without the accelerators. Once per process:
  every gfile call of a gs:// run and every epoch of the input pipeline
  ask for it."""
  if "tensorflow" not in sys.modules:
    skip = _KERAS_EAGER not in sys.modules
    if skip:
      sys.modules[_KERAS_EAGER] = None
    try:
      import tensorflow  # noqa: F401
    finally:
      if skip and sys.modules.get(_KERAS_EAGER, 0) is None:
        del sys.modules[_KERAS_EAGER]
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # TF must not grab accelerators
  return tf


def host_tfds():
  """The `tensorflow_datasets` module, on `host_tf()`'s TensorFlow."""
  host_tf()
  import tensorflow_datasets as tfds
  return tfds
