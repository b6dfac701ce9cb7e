"""TFLite / LiteRT export with builtin ops only.

``model.export(format="litert")`` silently enables SELECT_TF_OPS (Flex), which
`ai_edge_litert` cannot run. Here the converter gets TFLite builtins only; if an
op needs Flex the export fails with an `ExportError` naming it, and the written
flatbuffer is checked once more by listing its operators (`list_ops`).

The input keeps a dynamic batch (``shape_signature`` [-1, H, W, C]): call
``interpreter.resize_tensor_input`` before ``allocate_tensors``.

Example:

>>> export_tflite(model, "model_int8.tflite", quantization="int8",
...               representative_data=images[:100])            # doctest: +SKIP
"""

import collections
import os
import re

import numpy as np
import tensorflow as tf

from aw_keras.export import common
from aw_keras.export.layers import MATMUL_FORMS
from aw_keras.export.layers import AWConvExport
from aw_keras.export.policy import QUANTIZATIONS  # noqa: F401  (part of this module's API)
from aw_keras.export.policy import tflite_target
from aw_keras.export.transform import export_model
from aw_keras.export.transform import walk_layers
from aw_keras.utils import tf_quiet

IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}


def _builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _read_model(model_content):
    """The flatbuffer ``Model`` of a .tflite given as bytes or a path."""
    from ai_edge_litert import schema_py_generated as schema

    if isinstance(model_content, (str, os.PathLike)):
        with open(model_content, "rb") as handle:
            model_content = handle.read()
    return schema.Model.GetRootAsModel(model_content, 0)


def _operator_code_names(model):
    """The operator name of each entry of the model's operator-code table."""
    names = _builtin_names()
    result = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = (code.CustomCode() or b"CUSTOM").decode()
        result.append(name)
    return result


def unpack_model(model_content):
    """``(model, opcode_names)`` of .tflite bytes: the flatbuffer in
    ai_edge_litert's generated object API (``schema.ModelT``, editable) and
    the operator name of each operator-code index. `pack_model` writes it back."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_content, 0))
    return model, _operator_code_names(_read_model(model_content))


def pack_model(model):
    """The .tflite bytes of an object-API ``ModelT`` (see `unpack_model`)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def list_ops(model_content):
    """Sorted operator names in a .tflite flatbuffer (bytes or path); custom
    (including Flex) ops appear under their custom code, e.g. ``FlexErf``."""
    return sorted(set(_operator_code_names(_read_model(model_content))))


def count_ops(model_content):
    """``collections.Counter`` of operator names over every operator of every
    subgraph of a .tflite (bytes or path).

    >>> count_ops("model.tflite")["MUL"]   # doctest: +SKIP
    13
    """
    model = _read_model(model_content)
    names = _operator_code_names(model)
    counts = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            counts[names[subgraph.Operators(o).OpcodeIndex()]] += 1
    return counts


def near_constant_activations(model_content, scale_floor=1e-6):
    """Names of quantized activation tensors whose calibrated range is ~0.

    Such a tensor (scale below ``scale_floor``: it held the same value for all
    calibration data, e.g. a dead ReLU or a zero-initialized BatchNorm beta in
    a random-init model) makes XNNPACK refuse the whole int8 graph ("failed to
    prepare"): its requantization ratios fall outside XNNPACK's limits, and
    LiteRT then runs its slower reference kernels.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = _read_model(model_content)
    quantized = {schema.TensorType.INT8, schema.TensorType.UINT8}
    names = []
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(i)
            params = tensor.Quantization()
            if tensor.Type() not in quantized or params is None or params.ScaleLength() == 0:
                continue
            if model.Buffers(tensor.Buffer()).DataLength() > 0:
                continue  # a constant (weights), not an activation
            if float(np.max(params.ScaleAsNumpy())) < scale_floor:
                names.append(tensor.Name().decode())
    return names


def xnnpack_partitions(interpreter):
    """How many XNNPACK partitions an allocated ai_edge_litert ``Interpreter`` runs.

    1: XNNPACK runs the whole graph. More: some operators fell off the delegate
    and run on LiteRT's builtin kernels between the partitions (each boundary
    also converts layouts); 0: XNNPACK took nothing. Read from the interpreter's
    node list, where each partition is one ``DELEGATE`` node (ai_edge_litert has
    no public accessor for it).
    """
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


# Operators whose int8 output is their input's bytes: they need the same
# quantization on both sides.
_BYTE_COPY_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE")
# Operators whose int8 kernels requantize into whatever output quantization
# they are given. Any other producer (STRIDED_SLICE, PAD, GATHER, LOGISTIC...)
# copies bytes or has a fixed output quantization, so its output cannot be
# re-quantized alone.
_REQUANTIZING_OPS = ("MUL", "ADD", "SUB", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                     "BATCH_MATMUL", "QUANTIZE")


def symmetric_matmul_operands(model_content):
    """The int8 .tflite ``model_content`` (bytes) with every runtime right-hand
    operand of BATCH_MATMUL given zero point 0; returns (bytes, count changed).

    XNNPACK delegates an int8 BATCH_MATMUL whose right-hand side is computed at
    run time (AW's per-sample kernel) only when that operand's zero point is 0,
    and the converter calibrates an asymmetric one; undelegated, the matmul runs
    on LiteRT's reference kernel, tens of times slower. The operand gets the
    symmetric quantization covering the same range (``scale = max(|lo|, hi) /
    127``), and so does every tensor back through byte-copying operators
    (RESHAPE...) to the operator that computes it (a MUL), which then requantizes
    into the new scale: the graph stays consistent, the operand is at most one
    bit coarser. An operand whose chain starts at an operator that cannot
    requantize (a STRIDED_SLICE, say) is left as it is; `export_tflite` then
    finds the graph split and falls back to the taps.
    """
    model, opcode_names = unpack_model(model_content)
    changed = 0
    for subgraph in model.subgraphs:
        producers = {out: op for op in subgraph.operators for out in op.outputs}
        for op in subgraph.operators:
            if opcode_names[op.opcodeIndex] != "BATCH_MATMUL":
                continue
            chain = _byte_copy_chain(op.inputs[1], subgraph, producers, opcode_names)
            if chain is None:
                continue
            params = subgraph.tensors[chain[0]].quantization
            scale, zero_point = float(params.scale[0]), int(params.zeroPoint[0])
            symmetric = max(-scale * (-128 - zero_point), scale * (127 - zero_point)) / 127
            for index in chain:
                params = subgraph.tensors[index].quantization
                params.scale, params.zeroPoint = [symmetric], [0]
                params.min = params.max = None
            changed += 1
    if not changed:
        return model_content, 0
    return pack_model(model), changed


def _byte_copy_chain(tensor, subgraph, producers, opcode_names):
    """[tensor, its byte-copy sources...] when ``tensor`` is a per-tensor int8
    activation with a non-zero zero point computed by a requantizing operator
    (`_REQUANTIZING_OPS`) through byte copies only; else None."""
    from ai_edge_litert import schema_py_generated as schema

    def params_of(index):
        t = subgraph.tensors[index]
        q = t.quantization
        if t.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            return None
        return float(q.scale[0]), int(q.zeroPoint[0])

    first = params_of(tensor)
    if first is None or first[1] == 0:
        return None
    chain = [tensor]
    while True:
        producer = producers.get(chain[-1])
        if producer is None:
            return None  # a graph input or a constant: nothing computes it
        name = opcode_names[producer.opcodeIndex]
        if name in _REQUANTIZING_OPS:
            return chain
        if name not in _BYTE_COPY_OPS:
            return None
        source = producer.inputs[0]
        if params_of(source) != first:
            return None
        chain.append(source)


def delegated_partitions(model_content):
    """`xnnpack_partitions` of a .tflite given as bytes (0 when it cannot be loaded)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=model_content, num_threads=1)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError):
        return 0
    return xnnpack_partitions(interpreter)


def _matmul_layers(source):
    """How many layers of an exported model use a matmul form (0 for a SavedModel path)."""
    if isinstance(source, (str, os.PathLike)):
        return 0
    return sum(isinstance(layer, AWConvExport) and layer.form in MATMUL_FORMS
               for layer in walk_layers(source))


def tensor_types(model_content):
    """Set of tensor type names (``FLOAT32``, ``FLOAT16``, ``INT8``...) in the model."""
    from ai_edge_litert import schema_py_generated as schema

    model = _read_model(model_content)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    found = set()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            found.add(names.get(graph.Tensors(t).Type(), "?"))
    return found


def _unsupported_ops(message):
    ops = re.findall(r"'tf\.(\w+)'", message)
    ops += re.findall(r"\btf\.(\w+)\s*\{", message)
    ops += re.findall(r"Flex(\w+)", message)
    return sorted(set(ops))


def _representative(data, spec):
    if data is None:
        raise ValueError(
            '`quantization="int8"` needs `representative_data`: an array or iterable of '
            "input images (about 100 typical inputs) for calibration."
        )
    if callable(data):
        return data

    def generator():
        for sample in data:
            sample = np.asarray(sample, dtype=np.float32)
            if sample.ndim == len(spec.shape) - 1:
                sample = sample[None]
            yield [sample]

    return generator


# Operators XNNPACK has no int8 kernel for: left in an int8 model they run on
# LiteRT's builtin kernels between XNNPACK partitions. Kept in float instead
# (a DEQUANTIZE / float op / QUANTIZE that XNNPACK takes): AW-MobileNet's clipped
# blocks divide (N, 1, 1, C) attention vectors (docs/export.md).
FLOAT_IN_INT8 = ("DIV",)


def _converter(saved_model_dir, quantization, representative_data, io_dtype):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        loaded = tf.saved_model.load(saved_model_dir)
        spec = list(loaded.signatures["serving_default"].structured_input_signature[1].values())[0]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_data, spec)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_DTYPES[io_dtype]
        converter.inference_output_type = IO_DTYPES[io_dtype]
    return converter


def _convert(convert, quantization):
    try:
        with tf_quiet.filtered_stderr():  # the converter's C++ progress lines
            return convert()
    except Exception as error:  # the converter raises ConverterError and others
        message = str(error)
        ops = _unsupported_ops(message)
        if ops:
            raise common.ExportError(
                f"TFLite builtins cannot express op(s) {ops} (quantization={quantization!r}). "
                "They would need Flex/SELECT_TF_OPS, which ai_edge_litert and most mobile "
                "runtimes cannot run, so the export is refused. Replace those ops in the "
                "model with builtin-convertible ones."
            ) from error
        raise common.ExportError(f"TFLite conversion failed: {message[-2000:]}") from error


def _int8_with_float_ops(converter, ops, io_dtype):
    """The int8 model of ``converter`` with the operators ``ops`` left in float,
    by TFLite's selective quantization (`tf.lite.experimental.QuantizationDebugger`),
    with ``io_dtype`` inputs and outputs."""
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(ops), fully_quantize=io_dtype == "int8")
    with tf_quiet.filtered_stderr():  # the quantizer prints a bare "fully_quantize" line
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=converter.representative_dataset,
            debug_options=options)
        content = debugger.get_nondebug_quantized_model()
    return _uint8_interface(content) if io_dtype == "uint8" else content


def _uint8_interface(model_content):
    """A float-interface int8 model (QUANTIZE after each input, DEQUANTIZE before
    each output) turned into a uint8-interface one, as the converter writes it:
    each input becomes uint8 (the QUANTIZE requantizes uint8 -> int8) and each
    DEQUANTIZE a QUANTIZE int8 -> uint8 (same scale, zero point + 128)."""
    from ai_edge_litert import schema_py_generated as schema

    model, names = unpack_model(model_content)
    quantize = names.index("QUANTIZE")
    subgraph = model.subgraphs[0]

    def as_uint8(tensor, like):
        params = subgraph.tensors[like].quantization
        target = subgraph.tensors[tensor]
        target.type = schema.TensorType.UINT8
        target.quantization = schema.QuantizationParametersT()
        target.quantization.scale = list(params.scale)
        target.quantization.zeroPoint = [int(z) + 128 for z in params.zeroPoint]

    for op in subgraph.operators:
        name = names[op.opcodeIndex]
        if name == "QUANTIZE" and op.inputs[0] in subgraph.inputs:
            as_uint8(op.inputs[0], op.outputs[0])
        elif name == "DEQUANTIZE" and op.outputs[0] in subgraph.outputs:
            op.opcodeIndex = quantize
            as_uint8(op.outputs[0], op.inputs[0])
    return pack_model(model)


def convert_saved_model(saved_model_dir, quantization=None, representative_data=None,
                        io_dtype="int8", float_ops=None):
    """Converts a SavedModel directory to .tflite bytes (builtins only).

    For int8, operators in `FLOAT_IN_INT8` are kept in float (selective
    quantization) and BATCH_MATMUL's runtime operands get zero point 0
    (`symmetric_matmul_operands`): both so that XNNPACK takes the whole graph.
    ``float_ops`` (int8 only) names the `FLOAT_IN_INT8` operators the model is
    known to hold, so that it is converted once, selectively; None (default)
    finds them in a first, ordinary conversion and converts again if any.
    """
    tflite_target(quantization)  # validates
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be one of {tuple(IO_DTYPES)}, received {io_dtype!r}.")
    args = (saved_model_dir, quantization, representative_data, io_dtype)
    content = None
    if quantization == "int8" and float_ops is None:
        content = _convert(_converter(*args).convert, quantization)
        found = count_ops(content)
        float_ops = [op for op in FLOAT_IN_INT8 if found[op]]
    if quantization == "int8" and float_ops:
        content = _convert(lambda: _int8_with_float_ops(_converter(*args), float_ops, io_dtype),
                           quantization)
        found = count_ops(content)
        kept = [f"{found[op]} {op}" for op in float_ops if found[op]]
        if kept:
            common.log("int8: " + ", ".join(kept)
                       + " kept in float (XNNPACK has no int8 kernel for them)")
    if content is None:
        content = _convert(_converter(*args).convert, quantization)
    if quantization == "int8":
        content, changed = symmetric_matmul_operands(content)
        if changed:
            common.log(f"int8: {changed} BATCH_MATMUL operand(s) made symmetric (zero point 0) "
                       "so that XNNPACK takes them")
    flex = [op for op in list_ops(content) if op.startswith("Flex")]
    if flex:
        raise common.ExportError(f"The converted model contains Flex ops {flex}; refusing to write it.")
    return content


def _known_float_ops(source):
    """`FLOAT_IN_INT8` when the exported Keras model ``source`` has a layer in the
    clipped form (it divides by the attention scale: a DIV); else None (unknown:
    `convert_saved_model` looks)."""
    if isinstance(source, (str, os.PathLike)):
        return None
    clipped = any(isinstance(layer, AWConvExport) and layer.form == "clipped"
                  for layer in walk_layers(source))
    return FLOAT_IN_INT8 if clipped else None


def _int8_state(content):
    """(near-constant activation names, XNNPACK partitions or None when not tried)."""
    flat = near_constant_activations(content)
    return flat, None if flat else delegated_partitions(content)


def export_tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    io_dtype="int8",
    implementation=None,
    fold_batch_norms=None,
    clip_blocks=None,
    split_residual=None,
):
    """Exports ``model`` (or a SavedModel directory) to a .tflite file.

    Args:
        model: a Keras model, rewritten by `export_model` for the target
            ``tflite_<quantization>`` first; or the path of a SavedModel
            directory whose ``serving_default`` signature is converted as is.
        path: the .tflite file to write (atomically).
        quantization: None (float32), ``"float16"`` (float16 weights),
            ``"dynamic_range"`` (int8 weights, float activations) or ``"int8"``
            (full integer, needs ``representative_data``).
        representative_data: for int8: an array/iterable of input images, or a
            callable generator as TFLiteConverter expects.
        io_dtype: for int8: ``"int8"`` (default), ``"uint8"`` or ``"float32"``
            input and output tensors.
        implementation, fold_batch_norms, clip_blocks, split_residual: override
            the target's `aw_keras.export.policy.ExportPolicy`; None (default)
            keeps the policy table's choice. For int8 with layers in a matmul
            form (``implementation="auto"``, the int8 default, or
            ``"matmul"``) the converted model is loaded once: when XNNPACK
            does not take it whole, it is exported again with the taps form
            (logged as a warning).

    Returns:
        ``path``.
    """
    target = tflite_target(quantization)
    overrides = dict(fold_batch_norms=fold_batch_norms, clip_blocks=clip_blocks,
                     split_residual=split_residual)

    def convert(form):
        source = model
        if not isinstance(model, (str, os.PathLike)):
            source = export_model(model, target, implementation=form, **overrides)
        with common.temporary_saved_model(source) as saved_model_dir:
            content = convert_saved_model(saved_model_dir, quantization, representative_data,
                                          io_dtype, float_ops=_known_float_ops(source))
        return source, content

    source, content = convert(implementation)
    if quantization == "int8":
        flat, partitions = _int8_state(content)
        matmul_layers = _matmul_layers(source)
        if matmul_layers and partitions not in (None, 1):
            common.log(f"warning: XNNPACK runs this int8 model with the matmul form of "
                       f"{matmul_layers} AWConv2D layer(s) as {partitions} "
                       "partition(s), not 1: exporting again with the taps form everywhere")
            source, content = convert("taps")
            flat, partitions = _int8_state(content)
    with common.atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(content)
    common.log(f"wrote TFLite ({quantization or 'float32'}) {os.fspath(path)}, {len(content)} bytes")
    if quantization == "int8":
        _log_int8_state(flat, partitions)
    return os.fspath(path)


def _log_int8_state(flat, partitions):
    """Logs how XNNPACK takes an int8 model; a warning when it splits or refuses it."""
    if flat:
        shown = ", ".join(flat[:3]) + (f" and {len(flat) - 3} more" if len(flat) > 3 else "")
        common.log(
            f"warning: {len(flat)} activation tensor(s) had a ~0 range over the calibration "
            f"data ({shown}); XNNPACK will likely refuse this int8 model (aw_keras's verify runs "
            f"it with LiteRT's slower reference kernels; handed to XNNPACK, such a model "
            f"has aborted the process). Typical of random-init weights: calibrate "
            f"a trained model with real images."
        )
    elif partitions == 1:
        common.log("XNNPACK takes the whole int8 model (1 partition)")
    elif partitions == 0:
        common.log("warning: XNNPACK refuses this int8 model: it runs on LiteRT's slower "
                   "builtin kernels.")
    else:
        common.log(f"warning: this int8 model runs as {partitions} XNNPACK partitions: the "
                   "operators outside XNNPACK run on LiteRT's slower builtin kernels.")
