"""TensorFlow without its start-up noise on the terminal.

Importing TensorFlow writes a handful of C++ log lines straight to file
descriptor 2 ("Could not find cuda drivers", "This TensorFlow binary is
optimized ...", "failed call to cuInit ..." on a machine without a GPU).
They are not errors, ``TF_CPP_MIN_LOG_LEVEL`` does not remove them all, and a
new user reads them as failures. The command-line tools import TensorFlow
through `import_tensorflow`, which keeps those known lines out of what the
command shows and replays every other line, so real errors still appear.

Set ``AW_KERAS_TF_LOGS=1`` to see TensorFlow's own output unfiltered (and
``TF_CPP_MIN_LOG_LEVEL`` left as you set it).

Example:

>>> from aw_keras.utils import tf_quiet
>>> tf = tf_quiet.import_tensorflow()         # instead of `import tensorflow as tf`
>>> with tf_quiet.filtered_stderr():          # a noisy call, e.g. a TFLite conversion
...     pass

This module imports only the standard library.
"""

import contextlib
import os
import re
import sys
import tempfile

from aw_keras.utils.optional import require_tensorflow

ENV_VARIABLE = "AW_KERAS_TF_LOGS"
# TF_CPP_MIN_LOG_LEVEL set when the user has not: 2 hides TensorFlow's C++ INFO and
# WARNING messages, ERROR and FATAL still show.
DEFAULT_MIN_LOG_LEVEL = "2"

# abseil's format: "I0000 00:00:1796665971.557507    4943 cudart_stub.cc:31] message"
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ([\w.]+\.cc):\d+\] (.*)$")
# (source file, message start) of the C++ lines TensorFlow writes on every start
# that say nothing is wrong.
_NOISE = (
    ("cudart_stub.cc", "Could not find cuda drivers"),
    ("cpu_feature_guard.cc", "This TensorFlow binary is optimized"),
    ("port.cc", "oneDNN custom operations are on"),
    ("computation_placer.cc", "computation placer already registered"),
    ("cuda_dnn.cc", "Unable to register cuDNN factory"),
    ("cuda_fft.cc", "Unable to register cuFFT factory"),
    ("cuda_blas.cc", "Unable to register cuBLAS factory"),
    ("gpu_device.cc", "Created device"),
)
_CUINIT = "failed call to cuInit"
_PLAIN_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    # the second line of cpu_feature_guard's message
    "To enable the following instructions:",
    "TF-TRT Warning: Could not find TensorRT",
    # the TFLite quantizer's settings, printed on every conversion it runs
    "fully_quantize: ",
    # LiteRT, on creating every interpreter that uses XNNPACK (the default)
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
)


def enabled():
    """True unless the user asked for TensorFlow's own output (``AW_KERAS_TF_LOGS=1``)."""
    return os.environ.get(ENV_VARIABLE, "").strip().lower() in ("", "0", "false", "no")


def _no_gpu_expected():
    """True where a failed cuInit is expected: no NVIDIA device node, or every GPU
    hidden with CUDA_VISIBLE_DEVICES. Elsewhere it is a real driver problem."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return True
    return not (os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia"))


def is_noise(line):
    """True for a line (with or without its newline) that TensorFlow prints on
    start-up without anything being wrong; False for everything else."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return False
    if any(text.startswith(prefix) for prefix in _PLAIN_NOISE):
        return True
    match = _ABSL_LINE.match(text)
    if match is None:
        return False
    source, message = match.groups()
    if _CUINIT in message:
        return _no_gpu_expected()
    return any(source == name and message.startswith(start) for name, start in _NOISE)


@contextlib.contextmanager
def filtered_stderr():
    """Runs the block with file descriptor 2 (C++ and Python stderr alike) sent to
    a temporary file; afterwards writes back every line for which `is_noise` is
    False, in order. An exception in the block still gets its lines written back;
    a crash that ends the process inside the block (a C++ abort) loses them: rerun
    with ``AW_KERAS_TF_LOGS=1``, which turns the filter off."""
    if not enabled():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not is_noise(line)]
            if kept:
                text = "".join(kept)
                try:
                    sys.stderr.write(text if text.endswith("\n") else text + "\n")
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass


def import_tensorflow(feature="this part of aw_keras"):
    """``import tensorflow`` (and its first look at the devices, where the CUDA
    lines come from) with the start-up noise filtered out; returns the module.
    Without TensorFlow installed: an ImportError saying that ``feature`` needs it.

    Sets ``TF_CPP_MIN_LOG_LEVEL`` to 2 if it is unset. Call it before anything
    else imports TensorFlow (Keras included); once TensorFlow is imported it
    only returns the module. ``AW_KERAS_TF_LOGS=1`` turns the filter off.
    """
    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    if not enabled():
        return require_tensorflow(feature)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_MIN_LOG_LEVEL)
    with filtered_stderr():
        tensorflow = require_tensorflow(feature)

        # The CUDA platform starts (and says "failed call to cuInit" without a GPU)
        # on the first device query; listing devices leaves them configurable.
        tensorflow.config.list_physical_devices()
    return tensorflow
