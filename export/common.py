"""Shared export plumbing: the error type, the log, serving signatures and
atomic writes.

Example:

>>> with atomic_path("model.tflite") as temp:       # doctest: +SKIP
...     open(temp, "wb").write(content)
"""

import contextlib
import logging
import math
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from aw_keras.utils.keras_files import check_keras_archive  # noqa: F401 - public here too

logger = logging.getLogger("aw_keras.export")

class ExportError(RuntimeError):
    """An artifact could not be produced or failed a check; the message says why."""


def json_safe(value):
    """``value`` with every NaN / infinite float replaced by None (JSON's
    ``null``), through dicts, lists and tuples, so ``json.dump(...,
    allow_nan=False)`` writes standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a NumPy scalar
        return json_safe(value.item())
    return value


def log(message):
    """Logs ``message`` and prints it, so command-line users see it too."""
    logger.info(message)
    print(f"[aw_keras.export] {message}", flush=True)


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


def preprocessing_layers(model):
    """The names of the ``Rescaling`` / ``Normalization`` layers of ``model``
    (nested models included): the layers through which a model normalises raw
    images itself."""
    found, stack = [], list(getattr(model, "layers", None) or [])
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            found.append(layer.name)
        stack.extend(getattr(layer, "layers", None) or [])
    return found


def takes_raw_images(model):
    """True when ``model`` takes raw pixel values 0-255: a detector, or a model
    that normalises its input itself (`preprocessing_layers`), as every model
    ``aw-train`` writes does."""
    from aw_keras.export import detection

    return bool(detection.is_detector(model) or detection.is_two_stage_detector(model)
                or preprocessing_layers(model))


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
    """A tf.function images -> {output_key: model(images)} (inference mode).

    For a detector rewritten by `export_model` (it carries the detector's decode
    step): images -> {boxes, scores, classes, num_detections}, decoded in the
    graph (`aw_keras.export.detection`). For another model with dict outputs:
    images -> those outputs, under their own names.
    """
    from aw_keras.export import detection

    if detection.decoder_of(model) is not None:
        return detection.serving_function(model)
    try:
        structure = model.output
    except (AttributeError, ValueError):
        structure = None
    if isinstance(structure, dict):
        names = list(structure)

        def serve_dict(images):
            outputs = model(images, training=False)
            return {name: outputs[name] for name in names}

        return tf.function(serve_dict)
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
def atomic_path(final_path):
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
def temporary_saved_model(model):
    """A SavedModel of ``model`` (float32 ``images`` input, dynamic batch,
    ``serving_default`` signature) in a temp dir, removed afterwards; or
    ``model`` itself when it is already a SavedModel directory. The converters
    read it; pass a model from `export_model`. For a detector's `export_model`
    result the signature returns its raw outputs (``bbox_regression``,
    ``cls_logits``), not decoded detections."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ExportError(f"{path!r} is not a SavedModel directory (no saved_model.pb).")
        yield path
        return
    from aw_keras.export.saved_model import write_serving_saved_model

    from aw_keras.export import detection

    scratch = tempfile.mkdtemp(prefix="aw_export_sm_")
    try:
        path = os.path.join(scratch, "saved_model")
        if detection.decoder_of(model) is not None:
            # the converters get a detector's network alone: its NMS does not
            # convert to TFLite builtins (aw_keras.export.detection)
            detection.write_raw_saved_model(model, path)
        else:
            write_serving_saved_model(model, path)
        yield path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
