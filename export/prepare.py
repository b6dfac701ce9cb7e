"""Shared export plumbing: exportable AWConv2D strategies, serving functions,
atomic writes and the export error type.

Every exporter traces the model inside `exportable(model)`, which

switches every `AWConv2D` to an exportable strategy (default ``"taps"``) and
says so on the log, restoring the original strategies afterwards, and traces
inside `aw_kernels.export_friendly_ops()`: tap partials summed by ADDs (int8
has no ADD_N kernel) and uneven pooling bins by slices and MEAN (which int8
quantizes more faithfully than the default MATMULs).

Example:

>>> with exportable(model):               # doctest: +SKIP
...     archive = serving_archive(model)
"""

import contextlib
import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from aw_keras.layers import AWConv2D
from aw_keras.layers import aw_kernels

logger = logging.getLogger("aw_keras.export")

DEFAULT_IMPLEMENTATION = "taps"
# Measured here (tests/export/test_prepare.py): "taps", "matmul", "per_sample"
# (tf.map_fn -> TFLite WHILE / ONNX Loop) and "auto" convert and match Keras;
# "depthwise" folds the batch into channels, which neither converter accepts
# with a dynamic batch; "fused" is a custom CPU op that no runtime but a Python
# process with aw_keras loaded can run.
NOT_EXPORTABLE = ("depthwise", "fused")


class ExportError(RuntimeError):
    """An artifact could not be produced or failed a check; the message says why."""


def log(message):
    """Logs ``message`` and prints it, so command-line users see it too."""
    logger.info(message)
    print(f"[aw_keras.export] {message}", flush=True)


def aw_layers(model):
    """All `AWConv2D` layers of ``model``, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, AWConv2D)]


def _check_implementation(implementation):
    allowed = tuple(aw_kernels.EXPORTABLE)
    if implementation is not None and implementation not in allowed:
        raise ValueError(
            f"`implementation` must be None (keep each layer's strategy unless it cannot "
            f"export) or one of {allowed}, received implementation={implementation!r}."
        )


@contextlib.contextmanager
def exportable(model, implementation=DEFAULT_IMPLEMENTATION):
    """Context in which ``model`` traces to an exportable graph.

    Args:
        model: a Keras model.
        implementation: the AWConv2D strategy to trace with, one of
            `aw_kernels.EXPORTABLE` (default ``"taps"``: builtin ops, fastest in
            TFLite), or None to keep each layer's strategy except the
            non-exportable ``"depthwise"`` and ``"fused"``, which are switched to ``"taps"``.

    The original strategies are restored on exit, also after an error.
    """
    _check_implementation(implementation)
    layers = aw_layers(model)
    original = [layer.implementation for layer in layers]
    changed = []
    for layer in layers:
        target = implementation
        if target is None:
            target = DEFAULT_IMPLEMENTATION if layer.implementation in NOT_EXPORTABLE else None
        if target is not None and target != layer.implementation:
            changed.append((layer.implementation, target))
            layer.implementation = target
    if changed:
        olds = sorted({old for old, _ in changed})
        news = sorted({new for _, new in changed})
        log(
            f"switched {len(changed)} of {len(layers)} AWConv2D layers from implementation "
            f"{olds} to {news} for export (same numbers, exportable ops); restored afterwards"
        )
    try:
        with aw_kernels.export_friendly_ops():
            yield model
    finally:
        for layer, value in zip(layers, original):
            layer.implementation = value


# ------------------------------------------------------ batch-norm folding


def _keras_histories(value):
    """Layer names referenced by keras tensors anywhere in a serialized node."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [n for v in value.values() for n in _keras_histories(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _keras_histories(v)]
    return []


def layer_graph(model):
    """(layer config entries, {layer name: names of the layers that consume its
    output, ``"<output>"`` for a model output}) of a functional model; ([], {})
    when the model has no functional config."""
    try:
        config = model.get_config()
        entries = config["layers"]
    except (NotImplementedError, KeyError, TypeError):
        return [], {}
    consumers = {}
    for entry in entries:
        name = entry["config"]["name"]
        for source in set(_keras_histories(entry.get("inbound_nodes", []))):
            consumers.setdefault(source, []).append(name)
    for output in _keras_histories(config.get("output_layers", [])):
        consumers.setdefault(output, []).append("<output>")
    return entries, consumers


def foldable_batch_norms(model):
    """[(AWConv2D, BatchNormalization)] where the BN is the only consumer of an
    AWConv2D without activation, both called once, BN on the channel axis."""
    entries, consumers = layer_graph(model)
    pairs = []
    for entry in entries:
        if entry["class_name"] != "BatchNormalization" or len(entry.get("inbound_nodes", [])) != 1:
            continue
        sources = _keras_histories(entry["inbound_nodes"])
        if len(sources) != 1:
            continue
        try:
            conv, norm = model.get_layer(sources[0]), model.get_layer(entry["config"]["name"])
        except ValueError:
            continue
        if (
            isinstance(conv, AWConv2D)
            and conv.activation in (None, keras.activations.linear)
            and consumers.get(conv.name) == [norm.name]
            and norm.axis in (-1, 3, [3], [-1])
        ):
            pairs.append((conv, norm))
    return pairs


@contextlib.contextmanager
def call_overrides():
    """Yields ``override(layer, call)``, which makes ``layer`` trace ``call``
    instead of its own; every override is undone on exit (in reverse order, so
    nested overrides of one layer restore correctly)."""
    saved = []

    def override(layer, call):
        saved.append((layer, layer.__dict__.get("call")))
        layer.call = call

    try:
        yield override
    finally:
        for layer, previous in reversed(saved):
            if previous is None:
                layer.__dict__.pop("call", None)
            else:
                layer.call = previous


def identity_call(inputs, *args, **kwargs):
    """A layer call that passes its input through (for layers merged into another)."""
    return inputs


@contextlib.contextmanager
def folded_batch_norms(model):
    """Folds each BatchNormalization that directly follows an AWConv2D into the
    AWConv2D's kernel (in place; restored on exit).

    Exact: the attention scale S multiplies per output channel like BN's
    ``g = gamma / sqrt(var + eps)``, so ``BN(conv(x, K*S) + b)`` equals
    ``conv(x, (K*g)*S) + b*g + c`` with ``c = beta - mean*g``; the BN becomes
    ``y + c`` (gamma 1, mean 0, var 1 - eps) and, while folded, is called as
    exactly that: one ADD, no MUL by 1. Why: the attention MUL stops the
    TFLite converter from fusing the BN into the conv as it does for plain
    convs, so unfolded every AW layer costs one more MUL pass over its output
    (float TFLite), and in full-integer TFLite the AWConv2D output is quantized
    per tensor *before* the BN, while the raw conv outputs have very different
    ranges per channel.
    """
    pairs = foldable_batch_norms(model)
    saved = [
        ([v.numpy() for v in conv.weights], [v.numpy() for v in norm.weights]) for conv, norm in pairs
    ]
    with call_overrides() as override:
        try:
            for conv, norm in pairs:
                gamma = norm.gamma.numpy() if norm.gamma is not None else 1.0
                beta = norm.beta.numpy() if norm.beta is not None else 0.0
                mean, var = norm.moving_mean.numpy(), norm.moving_variance.numpy()
                scale = gamma / (var + norm.epsilon) ** 0.5
                conv.kernel.assign(conv.kernel.numpy() * scale)
                shift = beta - mean * scale
                if conv.bias is not None:
                    conv.bias.assign(conv.bias.numpy() * scale)
                if norm.gamma is not None:
                    norm.gamma.assign(np_ones_like(scale))
                norm.moving_mean.assign(np_zeros_like(mean))
                norm.moving_variance.assign(np_ones_like(var) - norm.epsilon)
                if norm.beta is not None:
                    norm.beta.assign(shift)
                elif not all(abs(float(v)) < 1e-12 for v in shift.ravel()):
                    raise ExportError(f"Cannot fold {norm.name!r}: it has no beta to hold the shift.")
                # The folded BN is exactly ``x + beta``; traced as a BN it would still emit
                # a MUL by 1 (an extra int8 requantization per AW layer).
                override(norm, _shift_only(norm))
            if pairs:
                log(f"folded {len(pairs)} BatchNormalization layers into the preceding AWConv2D "
                    "kernels (exact up to float rounding; restored afterwards)")
            yield pairs
        finally:
            for (conv, norm), (conv_values, norm_values) in zip(pairs, saved):
                for variable, value in zip(conv.weights, conv_values):
                    variable.assign(value)
                for variable, value in zip(norm.weights, norm_values):
                    variable.assign(value)


def is_folded(norm):
    """Whether ``norm`` is a BatchNormalization as `folded_batch_norms` leaves
    it: exactly ``x + beta`` (gamma 1, mean 0, variance 1 - epsilon)."""
    import numpy as np

    return (
        np.allclose(norm.moving_mean.numpy(), 0.0, rtol=0, atol=1e-7)
        and np.allclose(norm.moving_variance.numpy(), 1.0 - norm.epsilon, rtol=0, atol=1e-7)
        and (norm.gamma is None or np.allclose(norm.gamma.numpy(), 1.0, rtol=0, atol=1e-7))
    )


def _shift_only(norm):
    """The call of a folded BatchNormalization (gamma 1, mean 0, var 1 - eps)."""

    def call(inputs, training=None, mask=None):
        if norm.beta is None:
            return inputs
        return inputs + keras.ops.cast(norm.beta, inputs.dtype)

    return call


def np_ones_like(value):
    import numpy as np

    return np.ones_like(value)


def np_zeros_like(value):
    import numpy as np

    return np.zeros_like(value)


# ----------------------------------------------------------------- signatures


def output_name(model):
    """"probabilities" when the model ends in a softmax, else "logits"."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    if activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax":
        return "probabilities"
    if isinstance(last, keras.layers.Softmax):
        return "probabilities"
    return "logits"


def image_spec(model, batch=None, name="images", dtype=tf.float32):
    """TensorSpec of the model input with a dynamic (or given) batch."""
    if len(model.inputs) != 1:
        raise ExportError(
            f"Only single-input image models can be exported; {model.name!r} has "
            f"{len(model.inputs)} inputs."
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ExportError(
            f"Expected an image model with 4-D input (batch, height, width, channels); "
            f"{model.name!r} takes shape {shape}."
        )
    return tf.TensorSpec((batch,) + shape[1:], dtype, name=name)


def serving_function(model, output_key=None):
    """A tf.function images -> {output_key: model(images)} (inference mode)."""
    output_key = output_key or output_name(model)

    def serve(images):
        outputs = model(images, training=False)
        return {output_key: outputs}

    return tf.function(serve)


# -------------------------------------------------------------- atomic writes


def check_writable_dir(directory):
    """Creates ``directory`` if needed and checks files can be written there."""
    directory = os.fspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".aw_export_probe_", delete=True)
        probe.close()
    except OSError as error:
        raise ExportError(
            f"Cannot write to output directory {directory!r}: {error.strerror or error}. "
            "Choose a directory you can write to."
        ) from None
    return directory


@contextlib.contextmanager
def atomic_path(final_path, is_dir=False):
    """Yields a temporary path next to ``final_path``; moves it into place on
    success, removes it on failure. An existing ``final_path`` is replaced only
    after the new artifact is complete."""
    final_path = os.path.abspath(os.fspath(final_path))
    parent = check_writable_dir(os.path.dirname(final_path))
    scratch = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final_path)}.tmp-")
    temp_path = os.path.join(scratch, os.path.basename(final_path))
    try:
        yield temp_path
        if not os.path.exists(temp_path):
            raise ExportError(f"Export produced nothing at {temp_path!r}.")
        if os.path.isdir(final_path) and not os.path.islink(final_path):
            backup = os.path.join(scratch, "previous")
            os.rename(final_path, backup)
            os.rename(temp_path, final_path)
        else:
            os.replace(temp_path, final_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def temporary_saved_model(model, implementation=DEFAULT_IMPLEMENTATION, fold_batch_norms=False,
                          clip_blocks=False, split_residual=False):
    """A SavedModel of ``model`` (float32 ``images`` input, dynamic batch) in a
    temp dir, or ``model`` itself when it is already a SavedModel directory.
    With ``fold_batch_norms``, ``clip_blocks`` traces pointwise AW blocks in
    their exact clipped form (`aw_keras.export.clipped_blocks`) and
    ``split_residual`` the other residual-mode AW layers as conv + attention
    taps (`aw_keras.export.residual_split`), both for int8."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ExportError(f"{path!r} is not a SavedModel directory (no saved_model.pb).")
        yield path
        return
    from aw_keras.export.saved_model import write_serving_saved_model

    scratch = tempfile.mkdtemp(prefix="aw_export_sm_")
    try:
        path = os.path.join(scratch, "saved_model")
        if fold_batch_norms:
            from aw_keras.export import clipped_blocks
            from aw_keras.export import residual_split

            with contextlib.ExitStack() as stack:
                stack.enter_context(folded_batch_norms(model))
                if clip_blocks:  # 1x1 layers
                    stack.enter_context(clipped_blocks.clipped_blocks(model))
                if split_residual:  # k x k layers
                    stack.enter_context(residual_split.split_residual(model))
                write_serving_saved_model(model, path, implementation=implementation)
        else:
            write_serving_saved_model(model, path, implementation=implementation)
        yield path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
