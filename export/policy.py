"""Which rewrite each export target gets: the one table every exporter reads.

`export_model`, `export_saved_model`, `export_tflite`, `export_onnx`,
``aw-export`` and `verify` all look their target up here. Keras's own export
paths (``model.export`` in every format, ``tf.saved_model.save``,
``TFLiteConverter.from_keras_model``, tf2onnx on a SavedModel) never call the
exporters; they trace the AWConv2D layers themselves, which then use
`aw_kernels.PORTABLE` (see `aw_kernels.portable_trace`): the ``taps`` form of
the rows below without the BatchNorm folding.

| target | fold BN | clip 1x1 blocks | split k x k | form | verified by |
|---|---|---|---|---|---|
| ``saved_model`` | no | no | no | taps | max abs error <= 1e-4 |
| ``onnx`` | no | no | no | taps | max abs error <= 1e-4 |
| ``tflite_float32`` | yes | no | no | taps | max abs error <= 1e-4 |
| ``tflite_float16`` | yes | no | no | taps | max abs error <= 1e-2 |
| ``tflite_dynamic_range`` | no | no | no | taps | top-1 agreement >= 0.95 |
| ``tflite_int8`` | yes | yes | no | auto | top-1 agreement >= 0.95 |

``auto`` chooses per layer by shape (`auto_form`): the im2col + batched
matmul form where the output has at least `MATMUL_POSITIONS_PER_CHANNEL`
positions per input channel (ResNet50's 56x56 and 28x28 stages), the taps elsewhere.
Those matmul layers are not split: like the split's main convolution, the
matmul accumulates all taps in int32 and rounds once.
The rule was measured on int8 XNNPACK, single layers at ResNet50's stage
shapes (docs/export.md, "Where the int8 time goes"); after converting,
`export_tflite` checks that XNNPACK takes the whole graph and otherwise
exports again with the taps everywhere.

Folding a BatchNorm into the AWConv2D before it saves one multiplication
pass per layer in float TFLite (the converter cannot fuse it across the
attention product) and gives int8 a per-channel conv output scale; the
clipped and split forms keep int8 rounding where plain convolutions have it
(see `AWConvExport`; measurements in docs/export.md).

Example:

>>> policy_for("tflite_int8").clip_blocks
True
>>> policy_for("tflite_int8", split_residual=True).split_residual
True
"""

import dataclasses

IMPLEMENTATIONS = ("taps", "matmul", "auto")

# ``auto``: the matmul form where oh * ow >= this * C1 (k x k kernels, one
# input-channel group), measured on int8 XNNPACK (benchmarks/int8_layer_forms.py,
# docs/export.md): at 56x56x64 (49 positions per channel) it was 17 % faster than
# the taps, at 28x28x128 (6) 0-7 %, at 14x14x256 and 7x7x512 (below 1) repacking
# the per-sample kernel on every call made it 1.7x and 5x slower; its relative
# error against float is half the taps' everywhere.
MATMUL_POSITIONS_PER_CHANNEL = 4
QUANTIZATIONS = (None, "float16", "dynamic_range", "int8")


@dataclasses.dataclass(frozen=True)
class ExportPolicy:
    """The rewrites of one export target.

    Attributes:
        fold_batch_norms: fold each BatchNormalization that directly follows
            an AWConv2D (its only consumer) into the AWConv2D's kernel and bias.
        clip_blocks: trace ``AWConv2D(1x1) -> BatchNorm -> ReLU/ReLU6`` in the
            clipped form (needs ``fold_batch_norms``).
        split_residual: trace the residual-mode k x k AWConv2D layers as
            ``conv(x, K) + attention correction`` (``auto`` leaves its matmul
            layers unsplit).
        implementation: the form of the remaining AWConv2D layers, ``"taps"``,
            ``"matmul"`` or ``"auto"`` (per layer by shape, `auto_form`).
        check: how `verify` judges the artifact against Keras:
            ``("max_abs_error", bound)`` or ``("top1_agreement", bound)``.
    """

    fold_batch_norms: bool = False
    clip_blocks: bool = False
    split_residual: bool = False
    implementation: str = "taps"
    check: tuple = ("max_abs_error", 1e-4)

    def __post_init__(self):
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {IMPLEMENTATIONS}, received "
                f"implementation={self.implementation!r}."
            )
        if self.clip_blocks and not self.fold_batch_norms:
            raise ValueError(
                "`clip_blocks=True` needs `fold_batch_norms=True` (the clipped form is built "
                "from the folded BatchNorm), received fold_batch_norms=False."
            )


TARGETS = {
    "saved_model": ExportPolicy(),
    "onnx": ExportPolicy(),
    "tflite_float32": ExportPolicy(fold_batch_norms=True),
    "tflite_float16": ExportPolicy(fold_batch_norms=True, check=("max_abs_error", 1e-2)),
    "tflite_dynamic_range": ExportPolicy(check=("top1_agreement", 0.95)),
    # split_residual off: 1.25-1.32x instead of 1.51-1.53x of ResNet50's int8 latency, for
    # -0.002 top-1 agreement on 2048 images (CIFAR AW-ResNet, 8 trainings) and
    # +-0.01 on the paper models, of both signs (docs/export.md)
    "tflite_int8": ExportPolicy(fold_batch_norms=True, clip_blocks=True, split_residual=False,
                                implementation="auto", check=("top1_agreement", 0.95)),
}


def auto_form(kernel_size, input_groups, output_size, channels_in):
    """``"matmul"`` or ``"taps"``: the ``auto`` form of one AWConv2D layer with
    ``kernel_size`` (kh, kw), ``input_groups`` attention groups over its input
    channels, output ``(oh, ow)`` (None where unknown) and ``channels_in``.

    >>> auto_form((3, 3), 1, (28, 28), 128), auto_form((3, 3), 1, (14, 14), 256)
    ('matmul', 'taps')
    """
    oh, ow = output_size
    if tuple(kernel_size) == (1, 1) or input_groups != 1 or oh is None or ow is None:
        return "taps"
    return "matmul" if oh * ow >= MATMUL_POSITIONS_PER_CHANNEL * channels_in else "taps"


def tflite_target(quantization):
    """The target name of a TFLite quantization (None means float32)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}, received quantization={quantization!r}."
        )
    return f"tflite_{quantization or 'float32'}"


def policy_for(target, **overrides):
    """The `ExportPolicy` of ``target`` (a key of `TARGETS`), with the
    ``overrides`` that are not None applied (field names of `ExportPolicy`).
    Turning the folding off turns the clipped form off unless it is asked for."""
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {tuple(TARGETS)}, received target={target!r}.")
    fields = {field.name for field in dataclasses.fields(ExportPolicy)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"Unknown policy override(s) {unknown}; expected some of {sorted(fields)}.")
    changes = {name: value for name, value in overrides.items() if value is not None}
    if changes.get("fold_batch_norms") is False and "clip_blocks" not in changes:
        changes["clip_blocks"] = False  # the clipped form exists only folded
    return dataclasses.replace(TARGETS[target], **changes)


def artifact_target(kind, precision):
    """The target an artifact of format ``kind`` ("saved_model", "tflite",
    "onnx") and ``precision`` ("float32", "float16", ...) was exported for."""
    return f"tflite_{precision}" if kind == "tflite" else kind
