"""ONNX export through a SavedModel and tf2onnx (the path of
``python -m tf2onnx.convert --saved-model``; ``tf2onnx.convert.from_keras`` only
works with Keras 2). The batch dimension stays dynamic.

Example:

>>> export_onnx(model, "model.onnx", opset=17)                   # doctest: +SKIP
"""

import os

from aw_keras.export import common
from aw_keras.export.transform import export_model

DEFAULT_OPSET = 17


def convert_saved_model(saved_model_dir, path, opset=DEFAULT_OPSET):
    """Converts the ``serving_default`` signature of a SavedModel to ONNX at ``path``."""
    import tensorflow as tf
    from tf2onnx import convert
    from tf2onnx import tf_loader

    graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
        saved_model_dir,
        None,
        None,
        "serve",
        ["serving_default"],
        None,
        False,
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    with tf.device("/cpu:0"):
        proto, _ = convert._convert_common(  # what tf2onnx's own CLI calls
            graph_def,
            name=os.path.basename(os.fspath(path)),
            opset=opset,
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
            initialized_tables=tables,
            output_path=os.fspath(path),
        )
    return proto


def export_onnx(model, path, opset=DEFAULT_OPSET, implementation=None):
    """Exports ``model`` (or a SavedModel directory) to an ONNX file.

    Args:
        model: a Keras model (rewritten by `export_model` for the target
            ``"onnx"`` first), or a SavedModel directory (its ``serving_default``).
        path: the .onnx file to write (atomically).
        opset: ONNX opset (default 17).
        implementation: the form of the AWConv2D layers, ``"taps"`` (default)
            or ``"matmul"`` (see `aw_keras.export.policy`).

    Returns:
        ``path``. Input and output names are the signature's (``images`` ->
        ``probabilities``/``logits``); the batch dimension is symbolic.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 9:
        raise ValueError(f"`opset` must be an int >= 9, received opset={opset!r}.")
    if not isinstance(model, (str, os.PathLike)):
        model = export_model(model, "onnx", implementation=implementation)
    with common.temporary_saved_model(model) as saved_model_dir:
        with common.atomic_path(path) as temp:
            try:
                proto = convert_saved_model(saved_model_dir, temp, opset)
            except Exception as error:
                raise common.ExportError(f"ONNX conversion failed: {error}") from error
            batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
            if batch.HasField("dim_value"):
                raise common.ExportError(
                    f"The ONNX batch dimension was frozen to {batch.dim_value}; refusing to write it."
                )
    common.log(f"wrote ONNX (opset {opset}) {os.fspath(path)}")
    return os.fspath(path)
