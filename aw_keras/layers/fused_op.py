"""The fused AW-convolution CPU kernel: built on first use, cached, loaded.

``kernels/aw_conv_op.cc`` computes the per-sample convolution of AW-convolution
(and its gradients) in cache-sized blocks that end in one GEMM each, so neither
the per-sample kernels nor the nine tap partials are ever written to memory
(docs/speed.md has the measurements). TensorFlow wheels ship the headers needed
to compile it; the first use on a machine compiles it with the system C++
compiler (about a minute, longer on a busy machine; for this CPU:
``-march=native``) into a cache directory, later uses load the cached library.
Processes that start together build it once: the others wait for it
(`aw_keras.utils.cache`), and a build that is killed leaves nothing that is loaded.

- ``AW_KERAS_CACHE_DIR`` sets the cache directory (default
  ``$XDG_CACHE_HOME/aw_keras`` or ``~/.cache/aw_keras``).
- ``AW_KERAS_FUSED=0`` disables the fused kernel: ``implementation="auto"`` then
  uses the builtin-op strategies only.
- Without a compiler (or when the build fails) ``auto`` falls back to the
  builtin-op strategies; ``unavailable_reason()`` says why.

Each TensorFlow worker thread keeps its scratch buffers (a padded sample, a block
of rows: a few MiB at ResNet sizes, growing with the largest input seen) for reuse.

The fused op is CPU-only, float32/float64 (others are computed in float32), has no
XLA kernel and is not part of exported graphs: `implementation="auto"` never
picks it under XLA, on a machine with a GPU, or while a graph is traced for
export or ``tf.saved_model.save``.

Example:

>>> from aw_keras.layers import fused_op
>>> fused_op.available()  # doctest: +SKIP
True
"""

import hashlib
import logging
import os
import pathlib
import platform
import subprocess
import sys
import threading

import tensorflow as tf

from aw_keras.utils import cache

SOURCE = pathlib.Path(__file__).with_name("kernels") / "aw_conv_op.cc"
DISABLE_ENV = "AW_KERAS_FUSED"
CACHE_ENV = cache.CACHE_ENV
# Tried in order; the first that compiles is used. -mno-avx512fp16: TF's Eigen
# headers do not compile with GCC's AVX512-FP16 intrinsics enabled.
ARCH_FLAGS = (
    ["-march=native", "-mno-avx512fp16"],
    ["-march=native"],
    [],
)

_LOCK = threading.Lock()
_STATE = {"module": None, "reason": None, "tried": False}
logger = logging.getLogger("aw_keras")


def cache_dir():
    """Where built libraries are kept (see the module docstring)."""
    return pathlib.Path(cache.cache_root())


def disabled():
    """True when ``AW_KERAS_FUSED=0`` (or ``false``/``no``/``off``)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def _cpu_signature():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_key():
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(),
                 " ".join(tf.sysconfig.get_compile_flags()).encode(),
                 " ".join(tf.sysconfig.get_link_flags()).encode(),
                 _cpu_signature().encode(), sys.version.encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class _BuildError(Exception):
    """The compiler could not build the library; the message says why."""


def _compile(target):
    """Compiles SOURCE into the new file ``target``; raises `_BuildError` with the
    last error text when no flag set compiles."""
    compiler = os.environ.get("CXX", "c++")
    error = None
    for arch in ARCH_FLAGS:
        command = ([compiler, "-shared", "-fPIC", "-O3", *arch, "-w"]
                   + tf.sysconfig.get_compile_flags()
                   + [str(SOURCE), "-o", str(target)]
                   + tf.sysconfig.get_link_flags())
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _BuildError(f"could not run the C++ compiler {compiler!r}: {exc}") from None
        if result.returncode == 0:
            return
        error = (result.stderr or result.stdout).strip().splitlines()[-20:]
        error = f"{compiler} failed ({' '.join(arch) or 'generic'}):\n" + "\n".join(error)
    raise _BuildError(error)


def _build(target):
    logger.warning("aw_keras: building the fused AWConv2D CPU kernel once for this machine "
                   "(about a minute, longer on a busy machine); cached in %s", target.parent)
    _compile(target)


def _build_and_load():
    if disabled():
        return None, f"disabled by {DISABLE_ENV}={os.environ.get(DISABLE_ENV)!r}"
    if not SOURCE.exists():
        return None, f"kernel source missing: {SOURCE}"
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"cannot create the cache directory {directory}: {exc}"
    target = directory / f"aw_conv_op-{_library_key()}.so"
    try:
        cache.get_or_build(target, lambda temp: _build(pathlib.Path(temp)))
    except _BuildError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot write the kernel into the cache directory {directory}: {exc}"
    try:
        module = tf.load_op_library(str(target))
    except (tf.errors.NotFoundError, OSError) as exc:
        return None, f"cannot load {target}: {exc}"
    tf.RegisterGradient("AwConvForward")(_forward_gradient)
    return module, None


def load():
    """The loaded op module, building it on first use; None when unavailable."""
    with _LOCK:
        if not _STATE["tried"]:
            _STATE["tried"] = True
            _STATE["module"], _STATE["reason"] = _build_and_load()
            if _STATE["module"] is None and not disabled():
                logger.warning("aw_keras: fused AWConv2D kernel unavailable, using builtin "
                               "ops (slower): %s", _STATE["reason"])
        return _STATE["module"]


def available():
    """True when the fused kernel is built and loaded (builds it if needed)."""
    return load() is not None


def unavailable_reason():
    """Why the fused kernel is unavailable (None when it is available)."""
    load()
    return _STATE["reason"]


def _forward_gradient(op, grad):
    return load().aw_conv_backward(
        op.inputs[0], op.inputs[1], op.inputs[2], grad,
        strides=op.get_attr("strides"), dilations=op.get_attr("dilations"),
        padding=op.get_attr("padding"), mode=op.get_attr("mode"),
    )


def aw_conv(inputs, kernel, scale, geometry, mode=0):
    """``O[l] = conv(I[l], K * S[l])`` through the fused kernel (see aw_kernels).

    ``scale`` is the compact modulation (N, kh, kw, G1, C2). float32 and
    float64 run natively; other dtypes are computed in float32 and cast back.
    ``mode`` picks a blocking for tests and benchmarks (0: by shape; 1:
    kernel-scaled im2col; 2: output-scaled; 3: kernel-scaled per tap; 4:
    kernel-scaled on padded rows). A mode that does not apply to the geometry
    falls back to 1.
    """
    module = load()
    if module is None:
        raise RuntimeError(
            f"implementation='fused' needs the fused AWConv2D kernel, which is unavailable "
            f"here: {unavailable_reason()}. Use implementation='auto' (it falls back to "
            f"builtin ops) or install a C++ compiler.")
    dtype = inputs.dtype
    cast = dtype not in (tf.float32, tf.float64)
    if cast:
        inputs, kernel, scale = (tf.cast(t, tf.float32) for t in (inputs, kernel, scale))
    outputs = module.aw_conv_forward(
        inputs, kernel, scale, strides=list(geometry.strides),
        dilations=list(geometry.dilation_rate), padding=geometry.padding.upper(), mode=mode,
    )
    return tf.cast(outputs, dtype) if cast else outputs
