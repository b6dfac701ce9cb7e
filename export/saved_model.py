"""SavedModel export in the layout TF Serving loads: ``path/<version>/``.

The ``serving_default`` signature maps ``images`` (float32, dynamic batch) to
``probabilities`` (the model ends in a softmax) or ``logits``. ``images`` are
what the Keras model takes: for a model written by ``aw-train``, raw pixel values
0-255 (channels last, the run's image size), normalised inside the model.
Optional:

- ``preprocessing=ImagePreprocessing(...)`` (or ``"raw"``): the signature takes
  raw ``uint8`` images of any size instead, resizes them (bilinear) to the
  model's input size and scales them inside the graph;
- ``attention_signature=True``: a second signature ``attention_maps`` returning
  every AWConv2D's attention maps ``A`` (N, kh, kw, C1, C2), keyed by layer name;
- ``class_names=[...]``: written as ``<version>/assets.extra/labels.txt`` (line
  i = the name of label i; `aw_keras.export.labels`).

Example:

>>> version_dir = export_saved_model(model, "/models/aw_resnet50")  # doctest: +SKIP
>>> version_dir                                                       # doctest: +SKIP
'/models/aw_resnet50/1'
"""

import dataclasses
import os
import re

import keras
import tensorflow as tf

from aw_keras.export import common
from aw_keras.export.transform import aw_layers
from aw_keras.export.transform import export_model


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """Raw-image preprocessing run inside the serving graph.

    ``x = resize(uint8 image) * scale + offset``, then ``(x - mean) / std`` per
    channel when ``mean``/``std`` are given. ``resize=False`` requires inputs of
    the model's size.
    """

    scale: float = 1.0 / 255.0
    offset: float = 0.0
    mean: tuple = None
    std: tuple = None
    resize: bool = True
    input_dtype: str = "uint8"

    def __call__(self, images, size):
        x = tf.cast(images, tf.float32)
        if self.resize and size is not None:
            x = tf.image.resize(x, size, method="bilinear")
        x = x * self.scale + self.offset
        if self.mean is not None:
            x = x - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            x = x / tf.constant(self.std, tf.float32)
        return x


def _resolve_preprocessing(preprocessing):
    if preprocessing is None or isinstance(preprocessing, ImagePreprocessing):
        return preprocessing
    if preprocessing == "raw":
        return ImagePreprocessing()
    raise ValueError(
        "`preprocessing` must be None, 'raw' or an ImagePreprocessing instance, "
        f"received preprocessing={preprocessing!r}."
    )


def version_directory(path, version=None, overwrite=False):
    """``path/<version>`` (absolute) for a new SavedModel version: ``version``
    defaults to `next_version`; an existing directory needs ``overwrite``."""
    path = os.path.abspath(os.fspath(path))
    if version is None:
        version = next_version(path)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be a positive int, received version={version!r}.")
    target = os.path.join(path, str(version))
    if os.path.exists(target) and not overwrite:
        raise common.ExportError(
            f"{target!r} already exists. Pass a new `version`, or overwrite=True to replace it."
        )
    return target


def next_version(path):
    """1 + the largest integer-named subdirectory of ``path`` (1 when none)."""
    if not os.path.isdir(path):
        return 1
    versions = [int(n) for n in os.listdir(path) if n.isdigit() and os.path.isdir(os.path.join(path, n))]
    return max(versions, default=0) + 1


def _signature_key(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def write_serving_saved_model(model, path, preprocessing=None, attention_signature=False,
                              output_key=None):
    """Writes a SavedModel of ``model`` as it is directly at ``path`` (no
    versioning, not atomic); pass a model from `export_model`."""
    preprocessing = _resolve_preprocessing(preprocessing)
    output_key = output_key or common.output_name(model)
    spec = common.image_spec(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    if preprocessing is None:
        serve = common.serving_function(model, output_key)
        archive.add_endpoint("serving_default", serve, input_signature=[spec])
    else:
        size = tuple(spec.shape[1:3])
        size = None if None in size else size
        raw_spec = tf.TensorSpec(
            (None, None, None, spec.shape[3]), tf.as_dtype(preprocessing.input_dtype), name="images"
        )

        def serve_raw(images):
            outputs = model(preprocessing(images, size), training=False)
            return {output_key: outputs}

        archive.add_endpoint("serving_default", tf.function(serve_raw), input_signature=[raw_spec])
    if attention_signature:
        layers = aw_layers(model)
        if not layers:
            raise common.ExportError(
                f"`attention_signature=True` but {model.name!r} has no AWConv2D layer."
            )
        try:
            features = keras.Model(model.inputs, [layer.input for layer in layers])
        except (AttributeError, ValueError) as error:
            raise common.ExportError(
                "The attention_maps signature needs each AWConv2D to be called once in a "
                f"functional model: {error}"
            ) from None
        archive.track(features)

        def attention(images):
            inputs = features(images, training=False)
            if len(layers) == 1:
                inputs = [inputs]
            return {
                _signature_key(layer.name): layer.attention_maps(x, training=False)
                for layer, x in zip(layers, inputs)
            }

        archive.add_endpoint("attention_maps", tf.function(attention), input_signature=[spec])
    archive.write_out(os.fspath(path), verbose=False)
    return os.fspath(path)


def export_saved_model(
    model,
    path,
    version=None,
    preprocessing=None,
    attention_signature=False,
    output_key=None,
    implementation=None,
    overwrite=False,
    class_names=None,
):
    """Exports ``model`` as ``path/<version>/`` for TF Serving.

    Args:
        model: a Keras model with one 4-D image input, or a detector (its
            SavedModel serves ``images -> boxes, scores, classes, num_detections``).
        path: the model base directory (TF Serving's ``--model_base_path``).
        version: positive int; default: one more than the largest existing.
        preprocessing: None (float32 ``images`` as the model expects), ``"raw"``
            (uint8 images of any size, resized and scaled by 1/255), or an
            `ImagePreprocessing`.
        attention_signature: also export an ``attention_maps`` signature.
        output_key: output name; default ``"probabilities"`` after a softmax,
            else ``"logits"``.
        implementation: AWConv2D strategy to trace with (see `common.exportable`).
        overwrite: replace an existing version directory (atomically).
        class_names: optional list, the name of each label (one per class of
            the model, checked); written as ``assets.extra/labels.txt`` in the
            version directory.

    Returns:
        The version directory written.
    """
    from aw_keras.export import detection
    from aw_keras.export import labels

    if class_names is not None:
        labels.check_class_names(model, class_names, "`class_names`")
    if detection.is_two_stage_detector(model):
        # a subclassed detector whose call already decodes: traced as it is
        given = {"preprocessing": preprocessing, "attention_signature": attention_signature,
                 "output_key": output_key, "implementation": implementation}
        unsupported = [name for name, value in given.items() if value not in (None, False)]
        if unsupported:
            raise TypeError(f"{type(model).__name__} SavedModels take only `version`, "
                            f"`overwrite` and `class_names`; received {unsupported}.")
        return detection.export_two_stage_saved_model(model, path, version=version,
                                                       overwrite=overwrite,
                                                       class_names=class_names)
    target = version_directory(path, version, overwrite)
    exported = export_model(model, "saved_model", implementation=implementation)
    with common.atomic_path(target) as temp:
        write_serving_saved_model(
            exported,
            temp,
            preprocessing=preprocessing,
            attention_signature=attention_signature,
            output_key=output_key,
        )
        if class_names is not None:
            labels.write_saved_model_labels(temp, class_names)
    common.log(f"wrote SavedModel {target}")
    return target
