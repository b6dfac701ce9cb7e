"""`export_model`: a new Keras model, same function, in the target's export form.

The model given is only read: every layer is cloned (`keras.models.clone_model`,
nested models included) with its weights copied, and each AWConv2D becomes an
`AWConvExport` in the form the target's `ExportPolicy` says, carrying what it
absorbs as real weights: a BatchNormalization that follows it alone is folded
into its kernel and bias (and replaced by an `Absorbed` pass-through layer of the same name);
in the clipped form the ReLU after it is absorbed too. The result is a normal
functional model: call it, save it as `.keras`, or hand it to any converter.

Example:

>>> from aw_keras.export import export_model
>>> exported = export_model(model, "tflite_int8")                  # doctest: +SKIP
>>> exported.export("model_dir", format="tf_saved_model")           # doctest: +SKIP
"""

import keras
import numpy as np

from aw_keras.export.common import ExportError
from aw_keras.export.common import log
from aw_keras.export.layers import Absorbed
from aw_keras.export.layers import AWConvExport
from aw_keras.export.policy import auto_form
from aw_keras.export.policy import policy_for
from aw_keras.layers import AWConv2D


def walk_layers(model):
    """Every layer of ``model``, depth first, nested models and their layers included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def aw_layers(model):
    """The AWConv2D layers of ``model`` (nested models included)."""
    return [layer for layer in walk_layers(model) if isinstance(layer, AWConv2D)]


# ------------------------------------------------------------ graph reading


def _keras_histories(value):
    """Layer names referenced by keras tensors anywhere in a serialized node."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [n for v in value.values() for n in _keras_histories(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _keras_histories(v)]
    return []


def _graph(model):
    """(layers by name, {name: consumer names, "<output>" for a model output},
    {name: number of calls}) of a functional or Sequential model."""
    by_name = {layer.name: layer for layer in model.layers}
    consumers, calls = {}, {}
    if isinstance(model, keras.Sequential):
        names = [layer.name for layer in model.layers]
        for name, following in zip(names, names[1:] + ["<output>"]):
            consumers[name], calls[name] = [following], 1
        return by_name, consumers, calls
    config = model.get_config()
    for entry in config.get("layers", []):
        name = entry["config"]["name"]
        calls[name] = len(entry.get("inbound_nodes", []))
        for source in set(_keras_histories(entry.get("inbound_nodes", []))):
            consumers.setdefault(source, []).append(name)
    for output in _keras_histories(config.get("output_layers", [])):
        consumers.setdefault(output, []).append("<output>")
    return by_name, consumers, calls


def _graph_models(model):
    """``model`` and every functional or Sequential model nested in it."""
    models = [model]
    for layer in walk_layers(model):
        if isinstance(layer, keras.Model):
            models.append(layer)
    return models


def _relu_activation(layer):
    """"relu6" or "relu" for a plain ReLU(6) layer, else None."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if isinstance(layer, keras.layers.Activation):
        if layer.activation is keras.activations.relu:
            return "relu"
        if layer.activation is keras.activations.relu6:
            return "relu6"
    return None


def _only_consumer(name, consumers, calls, by_name):
    """The layer that alone consumes ``name``'s single output, or None."""
    following = consumers.get(name, [])
    if len(following) != 1 or following[0] == "<output>" or calls.get(following[0]) != 1:
        return None
    return by_name.get(following[0])


def plan_rewrites(model, policy):
    """{id(AWConv2D): (form, BatchNormalization or None, ReLU layer or None,
    clip activation or None)} for every AWConv2D of ``model`` under ``policy``."""
    plan = {}
    for graph_model in _graph_models(model):
        by_name, consumers, calls = _graph(graph_model)
        for layer in graph_model.layers:
            if not isinstance(layer, AWConv2D) or isinstance(layer, AWConvExport):
                continue
            norm = relu = clip = None
            if (
                policy.fold_batch_norms
                and calls.get(layer.name) == 1
                and layer.activation in (None, keras.activations.linear)
            ):
                norm = _only_consumer(layer.name, consumers, calls, by_name)
                if not (isinstance(norm, keras.layers.BatchNormalization)
                        and norm.axis in (-1, 3, [3], [-1])):
                    norm = None
            float32 = layer.compute_dtype == "float32"
            residual = layer.attention_mode == "residual"
            form = policy.implementation
            unsplit_matmul = False
            if form == "auto":
                form = _auto_form(layer, calls.get(layer.name))
                # one int32 accumulation over all taps: as faithful as the split
                # without its second convolution (docs/export.md)
                unsplit_matmul = form == "matmul"
            if norm is not None and policy.clip_blocks and float32 and residual and (
                layer.kernel_size == (1, 1) and layer.input_groups == 1
            ):
                relu = _only_consumer(norm.name, consumers, calls, by_name)
                clip = _relu_activation(relu) if relu is not None else None
                if clip is not None:
                    form = "clipped"
                else:
                    relu = None
            if form != "clipped" and policy.split_residual and float32 and residual and (
                layer.kernel_size != (1, 1)
            ) and not unsplit_matmul:
                form = "split_matmul" if form == "matmul" else "split"
            plan[id(layer)] = (form, norm, relu, clip)
    return plan


def _auto_form(layer, calls):
    """`auto_form` of an AWConv2D from its output shape (taps when it is called
    more than once or its spatial size is unknown)."""
    if calls != 1:
        return "taps"
    try:
        shape = layer.output.shape
        channels_in = layer.input.shape[-1]
    except (AttributeError, ValueError):
        return "taps"
    return auto_form(layer.kernel_size, layer.input_groups, (shape[1], shape[2]), channels_in)


# ------------------------------------------------------------ the rewrite


def _folded_weights(conv, norm):
    """(kernel, bias) of ``conv`` with ``norm`` folded in, float64 arithmetic.

    The attention scale S multiplies per output channel like the BN's
    ``g = gamma / sqrt(var + eps)``, so ``BN(conv(x, K*S) + b)`` equals
    ``conv(x, (K*g)*S) + b*g + (beta - mean*g)``.
    """
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else 0.0
    if norm is None:
        return kernel, bias
    gamma = norm.gamma.numpy() if norm.gamma is not None else 1.0
    beta = norm.beta.numpy() if norm.beta is not None else 0.0
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(norm.moving_variance.numpy(), np.float64)
    scale = np.asarray(gamma, np.float64) / np.sqrt(variance + norm.epsilon)
    shift = np.asarray(beta, np.float64) - mean * scale
    return kernel * scale, bias * scale + shift


def _export_layer(conv, form, norm, clip):
    config = conv.get_config()
    config.update(form=form, clip_activation=clip)
    if norm is not None:
        config["use_bias"] = True
    return AWConvExport.from_config(config)


def _copy_aw_weights(source, target, norm):
    kernel, bias = _folded_weights(source, norm)
    target.kernel.assign(kernel.astype(np.float32))
    if target.use_bias:
        target.bias.assign(np.broadcast_to(bias, (target.filters,)).astype(np.float32))
    for name in ("squeeze_conv", "squeeze_bn", "excite_conv", "excite_bn"):
        getattr(target, name).set_weights(getattr(source, name).get_weights())


def export_model(model, target="saved_model", implementation=None, fold_batch_norms=None,
                 clip_blocks=None, split_residual=None):
    """A new model computing the same function as ``model`` in ``target``'s form.

    Args:
        model: a functional or Sequential Keras model (nested models allowed).
            It is only read.
        target: a key of `aw_keras.export.policy.TARGETS` (``"saved_model"``,
            ``"onnx"``, ``"tflite_float32"``, ``"tflite_float16"``,
            ``"tflite_dynamic_range"``, ``"tflite_int8"``).
        implementation, fold_batch_norms, clip_blocks, split_residual: override
            the target's `ExportPolicy` fields; None keeps the table's value.

    Returns:
        A functional model with the same name, inputs and outputs, in which
        every AWConv2D is an `AWConvExport`, absorbed BatchNorm and ReLU layers
        are `Absorbed` pass-through layers of the same name, and all other layers are copies.
        For a detector (`aw_keras.export.detection.is_detector`, e.g. a RetinaNet) it
        is the plain functional network ``images -> {"bbox_regression",
        "cls_logits"}`` (nested backbone included) carrying the detector's decode
        step (`aw_keras.export.detection.DetectionDecoder`): its SavedModel serves
        decoded boxes, its TFLite / ONNX the raw outputs. Detectors export to
        ``tflite_float32`` only among the TFLite targets (`ExportError` otherwise).
    """
    policy = policy_for(target, implementation=implementation, fold_batch_norms=fold_batch_norms,
                        clip_blocks=clip_blocks, split_residual=split_residual)
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, received {type(model).__name__}.")
    from aw_keras.export import detection

    if detection.is_two_stage_detector(model):
        detection.check_two_stage_format(model, target)  # TFLite / ONNX: why not
        raise ExportError(
            f"{type(model).__name__} {model.name!r} is a subclassed detector that is traced "
            "as it is, not rewritten: export it with aw_keras.export.export_saved_model "
            "(or aw-export).")
    is_detector = detection.is_detector(model)
    if is_detector:
        detection.check_target(model, target)
    plan = plan_rewrites(model, policy)
    absorbed = {}  # id(layer) -> name of the AWConv2D that absorbs it
    for conv_id, (_, norm, relu, _) in plan.items():
        for layer in (norm, relu):
            if layer is not None:
                absorbed[id(layer)] = conv_id
    names = {id(layer): layer.name for layer in aw_layers(model)}
    copies, rewritten = [], []

    def clone(layer):
        if id(layer) in plan:
            form, norm, _, clip = plan[id(layer)]
            new = _export_layer(layer, form, norm, clip)
            rewritten.append((layer, new, norm))
            return new
        if id(layer) in absorbed:
            return Absorbed(names[absorbed[id(layer)]], name=layer.name, dtype=layer.dtype_policy)
        try:
            new = layer.__class__.from_config(layer.get_config())
        except Exception as error:
            raise ExportError(
                f"Cannot copy layer {layer.name!r} ({type(layer).__name__}) for export: "
                f"its get_config/from_config failed ({error})."
            ) from error
        copies.append((layer, new))
        return new

    try:
        exported = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except ExportError:
        raise
    except ValueError as error:
        raise ExportError(
            f"Cannot rebuild {model.name!r} for export: {error} Export works on functional "
            "and Sequential models (nested ones included)."
        ) from error
    for source, new in copies:
        new.set_weights(source.get_weights())
    for source, new, norm in rewritten:
        _copy_aw_weights(source, new, norm)
    forms = sorted({new.form for _, new, _ in rewritten})
    folded = sum(norm is not None for _, _, norm in rewritten)
    if rewritten:
        log(f"{target}: {len(rewritten)} AWConv2D as {forms}, {folded} BatchNorm folded, "
            f"{sum(new.form == 'clipped' for _, new, _ in rewritten)} ReLU absorbed")
    if is_detector:
        detection.attach_decoder(exported, model)
    return exported
