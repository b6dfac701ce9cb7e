"""Dynamic-range and full-integer int8 TFLite: top-1 agreement with Keras
>= 95% on 64 real Fashion-MNIST test images, after calibrating on 128 real
training images; no Flex ops; int8 and uint8 input/output.

The models are first trained for a few Adam steps on Fashion-MNIST (see
the `trained` fixture in conftest.py): a random model's logits are nearly tied, so its top-1
agreement would measure noise. Default run: the CIFAR-style AW-ResNet (3x3 AW
convs, ~25 s of training); slow: the five paper models. Measured here: without
folding the BatchNorm after each AWConv2D (aw_keras.export.policy) the
AW-ResNet's int8 agreement was 0.83 (max abs error 0.83); with it 0.97. The
paper models are trained 300 steps; AW-MobileNet's int8 agreement needs the
clipped pointwise blocks (AWConvExport form "clipped": 0.891 without, 0.953 with)
and, with CBAM, the spatial gate without CONCATENATION (see docs/export.md). The
models train deterministically (conftest.py), so a failure here reproduces. The
slow AW-SE-ResNet50 case fails (0.938 on 2026-12-03, one image short; 0.859 for an
earlier draw, with every int8 form; 0.906 for the same model with the exporter before
issue #15): the 300-step model's thin margins, an open finding, docs/export.md.
"""

import os

import numpy as np
import pytest

from aw_keras.export import export_tflite
from aw_keras.export import list_ops
from aw_keras.export import verify
from aw_keras.export.verify import TFLiteRunner

DEFAULT = [("aw_resnet_cifar", {})]
PAPER = ["aw_resnet50", "aw_se_resnet50", "aw_cbam_resnet50_spatial", "aw_mobilenet", "aw_se_mobilenet"]


def _check_quantized(model, tmp_path, real_images, calibration_images, io_dtypes=("int8", "uint8")):
    reference = np.asarray(model(real_images, training=False))
    # the check is meaningful only if the model is not a constant classifier
    assert len(np.unique(np.argmax(reference, -1))) >= 3
    paths = [export_tflite(model, tmp_path / "dr.tflite", quantization="dynamic_range")]
    for io in io_dtypes:
        paths.append(export_tflite(model, tmp_path / f"int8_{io}.tflite", quantization="int8",
                                   representative_data=calibration_images, io_dtype=io))
    results = []
    for path in paths:
        assert not [op for op in list_ops(path) if op.startswith("Flex") or op == "CUSTOM"]
        result = verify(path, model, real_images, batch_sizes=(1, 4), latency_repeats=0, reference=reference)
        print(f"{model.name} {result.precision} {os.path.basename(path)}: top-1 agreement "
              f"{result.top1_agreement:.3f}, max abs error {result.max_abs_error:.3g}")
        assert result.top1_agreement >= 0.95 and result.passed, result
        results.append(result)
    assert [r.precision for r in results] == ["dynamic_range"] + ["int8"] * len(io_dtypes)
    for io, path in zip(io_dtypes, paths[1:]):
        runner = TFLiteRunner(path)
        assert np.dtype(runner.input["dtype"]) == np.dtype(io)
        assert np.dtype(runner.output["dtype"]) == np.dtype(io)
    return results


@pytest.mark.parametrize("name,kwargs", DEFAULT, ids=[n for n, _ in DEFAULT])
def test_quantized_top1_agreement(name, kwargs, trained, tmp_path, real_images, calibration_images):
    model = trained(name, steps=100, **kwargs)
    _check_quantized(model, tmp_path, real_images, calibration_images)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_quantized_top1_agreement_paper_models(name, trained, tmp_path, real_images, calibration_images):
    # 300 steps for every model: after 60 AW-MobileNet is still a constant
    # classifier in inference mode, and the ResNet50s' top-2 margins are so thin
    # that one rounding flips an image (docs/export.md).
    model = trained(name, steps=300)
    _check_quantized(model, tmp_path, real_images, calibration_images, io_dtypes=("int8",))


def test_batch_norm_folding_is_exact(trained):
    from aw_keras.export import export_model
    from aw_keras.export.layers import Absorbed
    from aw_keras.export.transform import aw_layers

    model = trained("aw_resnet_cifar", steps=100)
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    before = [w.copy() for w in model.get_weights()]
    expected = np.asarray(model(x, training=False))
    exported = export_model(model, "tflite_float32")
    absorbed = [layer for layer in exported.layers if isinstance(layer, Absorbed)]
    assert len(absorbed) == len(aw_layers(model)) > 0
    np.testing.assert_allclose(np.asarray(exported(x, training=False)), expected, atol=1e-5)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
