"""FasterRCNN export: a briefly trained AW Faster R-CNN (64 px, FPN 16 channels)
as a SavedModel with RetinaNet's serving signature (images -> boxes, scores,
classes, num_detections; dynamic batch), loaded in a fresh process and compared
with Keras predict; ``aw-export`` on its .keras; TFLite / ONNX refused with the
reason (and the TFLite refusal checked against the converter)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras import applications  # noqa: E402
from aw_keras.detection import FasterRCNN  # noqa: E402
from aw_keras.export import ExportError  # noqa: E402
from aw_keras.export import cli  # noqa: E402
from aw_keras.export import detection  # noqa: E402

SIZE = 64
SMALL = dict(anchor_size=4, rpn_pre_nms_top_k_train=200, rpn_post_nms_top_k_train=100,
             rpn_pre_nms_top_k_test=100, rpn_post_nms_top_k_test=50, roi_samples_per_image=64,
             representation_size=64, seed=0)
ATOL = 1e-4


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(0)
    backbone = applications.get_model("aw_resnet_small_fpn", input_shape=(SIZE, SIZE, 3),
                                      fpn_channels=16, levels="two_stage")
    model = FasterRCNN(backbone, num_classes=3, **SMALL)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    train = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    targets = {"boxes": np.array([[[4, 6, 30, 40], [-1, -1, -1, -1]],
                                  [[10, 10, 60, 50], [20, 0, 40, 20]]] * 2, "float32"),
               "labels": np.array([[1, -1], [0, 2]] * 2, "int32")}
    model.fit(train, targets, batch_size=4, epochs=2, verbose=0)
    return model


def test_saved_model_signature_fresh_process_matches_predict(detector, images, tmp_path):
    expected = detector.predict(images, batch_size=3, verbose=0)
    assert int(expected["num_detections"].sum()) > 0, "no detections to compare"
    path = detection.export_two_stage_saved_model(detector, tmp_path / "sm", version=1)
    assert path.endswith(os.path.join("sm", "1"))
    with pytest.raises(ExportError, match="already exists"):
        detection.export_two_stage_saved_model(detector, tmp_path / "sm", version=1)
    np.save(tmp_path / "images.npy", images)
    np.savez(tmp_path / "expected.npz", **{k: np.asarray(v) for k, v in expected.items()})
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        serve = tf.saved_model.load({path!r}).signatures["serving_default"]
        spec = serve.structured_input_signature[1]["images"]
        images = np.load({str(tmp_path / "images.npy")!r})
        out = {{}}
        for batch in (1, 3):  # dynamic batch
            parts = [serve(images=tf.constant(images[i:i + batch])) for i in range(0, 3, batch)]
            out[batch] = {{k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}}
        expected = np.load({str(tmp_path / "expected.npz")!r})
        report = {{"input_shape": list(spec.shape.as_list()), "input_dtype": spec.dtype.name,
                   "keys": sorted(out[1]),
                   "dtypes": {{k: v.dtype.name for k, v in out[1].items()}},
                   "shapes": {{k: list(v.shape) for k, v in out[1].items()}}}}
        for batch, got in out.items():
            n = expected["num_detections"]
            report[f"num_equal_{{batch}}"] = bool((got["num_detections"] == n).all())
            report[f"classes_equal_{{batch}}"] = bool((got["classes"] == expected["labels"]).all())
            report[f"boxes_err_{{batch}}"] = float(np.abs(got["boxes"] - expected["boxes"]).max())
            report[f"scores_err_{{batch}}"] = float(
                np.abs(got["scores"] - expected["confidence"]).max())
        print("REPORT" + json.dumps(report))
    """)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    assert report["input_shape"] == [None, SIZE, SIZE, 3] and report["input_dtype"] == "float32"
    assert report["keys"] == ["boxes", "classes", "num_detections", "scores"]
    assert report["dtypes"] == {"boxes": "float32", "scores": "float32", "classes": "int32",
                                "num_detections": "int32"}
    assert report["shapes"] == {"boxes": [3, 100, 4], "scores": [3, 100], "classes": [3, 100],
                                "num_detections": [3]}
    for batch in (1, 3):
        assert report[f"num_equal_{batch}"] and report[f"classes_equal_{batch}"], report
        assert report[f"boxes_err_{batch}"] <= ATOL * SIZE, report
        assert report[f"scores_err_{batch}"] <= ATOL, report


def test_verify_two_stage_saved_model(detector, images, tmp_path):
    path = detection.export_two_stage_saved_model(detector, tmp_path / "sm")
    result = detection.verify_two_stage_saved_model(path, detector, images)
    assert result.passed, result.check
    assert result.detection["images_matching"] == 3 and result.detection["detections"] > 0


def test_aw_export_cli_on_saved_faster_rcnn(detector, tmp_path, capsys):
    model_path = str(tmp_path / "frcnn.keras")
    detector.save(model_path)
    # aw-train's run.json next to the model names the labels 0..K-1
    names = ["circle", "square", "triangle"]
    (tmp_path / "run.json").write_text(json.dumps({"class_names": names}))
    out = tmp_path / "export"
    code = cli.main([model_path, "--out", str(out), "--verify-samples", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.out[-2000:] + captured.err[-3000:]
    assert "saved_model only" in captured.out + captured.err
    assert os.path.isdir(out / "saved_model" / "1")
    assert not any(name.endswith((".tflite", ".onnx")) for name in os.listdir(out))

    def refuse(constant):  # NaN / Infinity are not JSON
        raise ValueError(f"verification.json holds {constant}")

    report = json.loads((out / "verification.json").read_text(), parse_constant=refuse)
    assert report["failures"] == []
    assert [r["format"] for r in report["results"]] == ["saved_model"]
    assert report["results"][0]["passed"]
    assert report["results"][0]["max_rel_error"] is None  # no raw outputs: null, not NaN
    assert report["results"][0]["runtime"] == "tf.saved_model.load"
    assert "| tf.saved_model.load |" in (out / "verification.md").read_text()
    assert report["labels"]["passed"] is True and report["labels"]["classes"] == 3
    for path in (out / "labels.txt", out / "saved_model" / "1" / "assets.extra" / "labels.txt"):
        assert path.read_text().splitlines() == names


@pytest.mark.parametrize("formats, needle", [("tflite", "CropAndResize"),
                                             ("saved_model,onnx", "CombinedNonMaxSuppression")])
def test_aw_export_refuses_tflite_and_onnx(detector, tmp_path, capsys, formats, needle):
    model_path = str(tmp_path / "frcnn.keras")
    detector.save(model_path)
    out = tmp_path / "export"
    code = cli.main([model_path, "--formats", formats, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "saved_model" in err, err
    assert not out.exists()  # refused: nothing written, not even an empty --out


def test_check_two_stage_format(detector):
    detection.check_two_stage_format(detector, "saved_model")
    for fmt, needle in (("tflite_float32", "DynamicPartition"), ("onnx", "onnxruntime")):
        with pytest.raises(ExportError, match=needle):
            detection.check_two_stage_format(detector, fmt)
    assert detection.is_two_stage_detector(detector)
    assert not detection.is_detector(detector)
    with pytest.raises(TypeError, match="FasterRCNN"):
        detection.export_two_stage_saved_model(keras.Sequential([keras.layers.Dense(1)]), "x")


def test_the_generic_export_functions_dispatch_or_say_why(detector, images, tmp_path):
    from aw_keras.export import export_model
    from aw_keras.export import export_onnx
    from aw_keras.export import export_saved_model
    from aw_keras.export import export_tflite

    target = export_saved_model(detector, tmp_path / "served", version=3)
    assert target.endswith(os.path.join("served", "3"))
    served = tf.saved_model.load(target).signatures["serving_default"]
    got = served(images=tf.constant(images))
    np.testing.assert_array_equal(got["num_detections"].numpy(),
                                  detector.predict(images, verbose=0)["num_detections"])
    with pytest.raises(TypeError, match="preprocessing"):
        export_saved_model(detector, tmp_path / "other", preprocessing="raw")
    with pytest.raises(ExportError, match="DynamicPartition"):
        export_tflite(detector, tmp_path / "d.tflite")
    with pytest.raises(ExportError, match="onnxruntime"):
        export_onnx(detector, tmp_path / "d.onnx")
    with pytest.raises(ExportError, match="export_saved_model"):
        export_model(detector, "saved_model")
    assert not os.path.exists(tmp_path / "d.tflite") and not os.path.exists(tmp_path / "d.onnx")


def test_tflite_builtins_really_fail(detector):
    """The refusal's reason, measured: the converter with builtin ops only fails on
    CropAndResize / DynamicPartition / CombinedNonMaxSuppression."""
    function = tf.function(lambda images: detector(images, training=False), input_signature=[
        tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="images")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], detector)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with pytest.raises(Exception) as error:
        converter.convert()
    message = str(error.value)
    for op in ("CropAndResize", "DynamicPartition", "CombinedNonMaxSuppression"):
        assert f"tf.{op}" in message, op
