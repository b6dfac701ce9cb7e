"""Detector export (issue #13): a briefly trained AW-RetinaNet (64x64, FPN with 32
channels) as a SavedModel serving decoded detections (signature, dynamic batch,
fresh-process load without aw_keras, a TF Serving PredictRequest), as TFLite
(builtins only) and ONNX of the raw heads whose outputs, decoded in Python,
equal ``detector.predict``; `verify` on each; the user's detector untouched;
``aw-export`` on a saved detector; clear errors for what is not supported."""

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

import serving_helper as serving  # noqa: E402
from aw_keras import applications  # noqa: E402
from aw_keras.detection import RetinaNet  # noqa: E402
from aw_keras.export import ExportError  # noqa: E402
from aw_keras.export import cli  # noqa: E402
from aw_keras.export import detection  # noqa: E402
from aw_keras.export import export_model  # noqa: E402
from aw_keras.export import export_onnx  # noqa: E402
from aw_keras.export import export_saved_model  # noqa: E402
from aw_keras.export import export_tflite  # noqa: E402
from aw_keras.export import list_ops  # noqa: E402
from aw_keras.export import verify  # noqa: E402
from aw_keras.export.transform import aw_layers  # noqa: E402
from aw_keras.layers import AWConv2D  # noqa: E402

SIZE = 64
ATOL = 1e-4  # the float32 bound of the export policy
BOX_ATOL = ATOL * SIZE  # boxes in pixels: 1e-4 of the image side


def _batch():
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    targets = {
        "boxes": np.array([[[4, 6, 30, 40], [-1, -1, -1, -1]],
                           [[10, 10, 60, 50], [20, 0, 40, 20]]] * 2, "float32"),
        "labels": np.array([[1, -1], [0, 2]] * 2, "int32"),
    }
    return images, targets


@pytest.fixture(scope="module")
def images():
    return _batch()[0]


@pytest.fixture(scope="module")
def detector():
    """An AW-RetinaNet trained a few steps: its detections are not empty."""
    keras.utils.set_random_seed(0)
    backbone = applications.get_model("aw_resnet_small_fpn", input_shape=(SIZE, SIZE, 3),
                                      fpn_channels=32)
    model = RetinaNet(backbone, num_classes=3)
    # BN moving statistics follow within a few steps (inference mode uses them)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    images, targets = _batch()
    model.fit(images, targets, epochs=5, batch_size=4, verbose=0)
    assert np.sum(model.predict(images, verbose=0)["num_detections"]) > 0
    return model


@pytest.fixture(scope="module")
def expected(detector, images):
    """Keras's answers: raw outputs (the network) and ``predict``'s detections."""
    raw = detector(images, training=False)
    return {"raw": {k: np.asarray(raw[k]) for k in detection.RAW_OUTPUTS},
            "detections": detector.predict(images, verbose=0)}


@pytest.fixture(scope="module")
def snapshot(detector):
    """The detector's weights before any export."""
    return [w.copy() for w in detector.get_weights()]


@pytest.fixture(scope="module")
def artifacts(detector, snapshot, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    return {
        "saved_model": export_saved_model(detector, out / "serving"),
        "tflite": export_tflite(detector, out / "detector.tflite"),
        "onnx": export_onnx(detector, out / "detector.onnx"),
        "config": detection.save_decoder_config(detector, out / "decoder.json"),
    }


def assert_same_detections(got, want, count=None):
    """Decoded detections (predict's keys) equal Keras's within float32 tolerance."""
    count = len(want["num_detections"]) if count is None else count
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"][:count])
    np.testing.assert_array_equal(got["labels"], want["labels"][:count])
    np.testing.assert_allclose(got["confidence"], want["confidence"][:count], atol=ATOL)
    np.testing.assert_allclose(got["boxes"], want["boxes"][:count], atol=BOX_ATOL)


def signature_detections(outputs):
    return {key: np.asarray(outputs[name]) for key, name in
            zip(detection.PREDICT_KEYS, detection.SIGNATURE_OUTPUTS)}


# ------------------------------------------------------------------ the rewrite


def test_export_model_gives_the_raw_network_with_the_decode_step(detector, images, expected):
    exported = export_model(detector, "saved_model")
    assert isinstance(exported, keras.Model) and not isinstance(exported, RetinaNet)
    assert set(exported.output) == set(detection.RAW_OUTPUTS)
    assert not [layer for layer in aw_layers(exported) if type(layer) is AWConv2D]
    assert detection.decoder_of(exported) is not None
    outputs = exported(images, training=False)
    for name in detection.RAW_OUTPUTS:
        np.testing.assert_allclose(outputs[name], expected["raw"][name], atol=ATOL)


def test_user_detector_untouched(detector, snapshot, artifacts, images, expected):
    for before, after in zip(snapshot, detector.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert type(detector) is RetinaNet
    assert any(type(layer) is AWConv2D for layer in aw_layers(detector))
    assert_same_detections(detector.predict(images, verbose=0), expected["detections"])


# ------------------------------------------------------------------ SavedModel


def test_saved_model_signature(artifacts):
    loaded = tf.saved_model.load(artifacts["saved_model"])
    function = loaded.signatures["serving_default"]
    inputs = function.structured_input_signature[1]
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.float32
    assert inputs["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    outputs = function.structured_outputs
    assert set(outputs) == {"boxes", "scores", "classes", "num_detections"}
    assert outputs["boxes"].dtype == tf.float32 and outputs["boxes"].shape.as_list() == [None, 100, 4]
    assert outputs["scores"].dtype == tf.float32 and outputs["scores"].shape.as_list() == [None, 100]
    assert outputs["classes"].dtype == tf.int32 and outputs["classes"].shape.as_list() == [None, 100]
    assert outputs["num_detections"].dtype == tf.int32
    assert outputs["num_detections"].shape.as_list() == [None]


@pytest.mark.parametrize("batch", [1, 3])
def test_saved_model_detections_equal_predict(artifacts, images, expected, batch):
    function = tf.saved_model.load(artifacts["saved_model"]).signatures["serving_default"]
    got = signature_detections(function(images=tf.constant(images[:batch])))
    assert_same_detections(got, expected["detections"], batch)


def test_saved_model_fresh_process_without_aw_keras(artifacts, images, expected, tmp_path):
    np.save(tmp_path / "x.npy", images[:3])
    code = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        f = tf.saved_model.load({artifacts['saved_model']!r}).signatures["serving_default"]
        out = f(images=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))
        np.savez({str(tmp_path / 'y.npz')!r}, **{{k: v.numpy() for k, v in out.items()}})
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("aw_keras", "keras_hub")))
        """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # neither aw_keras nor keras-hub
    got = signature_detections(dict(np.load(tmp_path / "y.npz")))
    assert_same_detections(got, expected["detections"], 3)


def test_saved_model_answers_a_predict_request(artifacts, images, expected):
    request = serving.make_predict_request(images[:3], model_name="retinanet")
    response = serving.predict(artifacts["saved_model"], request)
    assert set(response.outputs) == {"boxes", "scores", "classes", "num_detections"}
    got = signature_detections({k: tf.make_ndarray(v) for k, v in response.outputs.items()})
    assert got["labels"].dtype == np.int32
    assert_same_detections(got, expected["detections"], 3)


# ------------------------------------------------------------------ TFLite and ONNX


def run_tflite(path, batch):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    return interpreter.get_signature_runner("serving_default")(images=batch)


def run_onnx(path, batch):
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch})))


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
@pytest.mark.parametrize("batch", [1, 3])
def test_raw_outputs_and_decoded_detections(artifacts, detector, images, expected, kind, batch):
    run = run_tflite if kind == "tflite" else run_onnx
    outputs = run(artifacts[kind], images[:batch])
    assert set(outputs) == set(detection.RAW_OUTPUTS)
    for name in detection.RAW_OUTPUTS:
        assert outputs[name].shape == expected["raw"][name][:batch].shape
        np.testing.assert_allclose(outputs[name], expected["raw"][name][:batch], atol=ATOL)
    # decoded with the detector, and with the JSON config alone
    for source in (detector, artifacts["config"]):
        got = detection.decode_raw_outputs(source, outputs["bbox_regression"], outputs["cls_logits"])
        assert {k: v.dtype for k, v in got.items()} == {
            k: np.asarray(v).dtype for k, v in expected["detections"].items()}
        assert_same_detections(got, expected["detections"], batch)


def test_tflite_builtins_only_and_onnx_without_loops(artifacts):
    ops = list_ops(artifacts["tflite"])
    assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "WHILE")], ops
    import onnx

    graph = onnx.load(artifacts["onnx"]).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert not {"Loop", "If", "Scan"} & {node.op_type for node in graph.node}
    assert [i.name for i in graph.input] == ["images"]
    assert not graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")


def test_keras_hub_nms_does_not_convert_to_builtins(detector):
    """Why TFLite holds the raw heads: the decode step (keras-hub's NMS) needs a
    Flex op (Keras's TF argmax emits tf.BitwiseAnd). If this starts passing,
    update docs/detection.md ("## Export")."""
    decoder = detection.DetectionDecoder.from_detector(detector)
    a, k = decoder.num_anchors, decoder.num_classes
    function = decoder._decode_function().get_concrete_function(
        tf.TensorSpec((1, a, 4), tf.float32), tf.TensorSpec((1, a, k), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with pytest.raises(Exception, match="BitwiseAnd"):
        converter.convert()


def test_decoder_config_round_trip(artifacts, detector):
    config = json.loads(open(artifacts["config"]).read())
    assert config["format"] == detection.CONFIG_FORMAT
    assert config["class_name"] == "aw_keras>RetinaNet"
    assert config["image_shape"] == [SIZE, SIZE, 3]
    assert config["num_classes"] == 3 and config["max_detections"] == 100
    rebuilt = detection.DetectionDecoder.from_config(artifacts["config"])
    assert rebuilt.num_anchors == detector.output["bbox_regression"].shape[1]
    anchors = rebuilt.anchors()
    assert anchors.shape == (rebuilt.num_anchors, 4)
    reference = detector.anchor_generator(np.zeros((1, SIZE, SIZE, 3), "float32"))
    np.testing.assert_array_equal(anchors, np.concatenate([np.asarray(v) for v in reference.values()]))
    with pytest.raises(ValueError, match="must have shape"):
        rebuilt(np.zeros((1, 10, 4), "float32"), np.zeros((1, 10, 3), "float32"))


def test_detection_artifacts_are_recognized(artifacts):
    assert detection.artifact_kind(artifacts["saved_model"]) == "detections"
    assert detection.artifact_kind(artifacts["tflite"]) == "raw"
    assert detection.artifact_kind(artifacts["onnx"]) == "raw"


# ------------------------------------------------------------------ verify


@pytest.mark.parametrize("kind", ["saved_model", "tflite", "onnx"])
def test_verify(artifacts, detector, images, kind):
    result = verify(artifacts[kind], detector, images, batch_sizes=(1, 3), latency_repeats=1)
    assert result.passed, result
    assert result.precision == "float32"
    details = result.detection
    assert details["images_matching"] == details["images"] == len(images)
    assert details["detections"] > 0
    assert details["scores_max_abs_error"] <= ATOL
    assert details["boxes_max_abs_error"] <= BOX_ATOL
    if kind == "saved_model":
        assert details["raw_max_abs_error"] is None
    else:
        assert 0 < details["raw_max_abs_error"] <= ATOL
    failed = verify(artifacts[kind], detector, images, batch_sizes=(4,), latency_repeats=0,
                    tolerance=1e-12)
    assert not failed.passed


def test_verify_refuses_a_classifier_artifact_for_a_detector(detector, images, tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(AWConv2D(4, 3, padding="same")(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = export_onnx(classifier, tmp_path / "classifier.onnx")
    with pytest.raises(ExportError, match="not a detector's artifact"):
        verify(path, detector, images[:1], latency_repeats=0)


# ------------------------------------------------------------------ unsupported requests


@pytest.mark.parametrize("quantization", ["int8", "float16", "dynamic_range"])
def test_quantized_tflite_is_refused_for_detectors(detector, images, snapshot, tmp_path, quantization):
    with pytest.raises(ExportError, match=f"quantization='{quantization}' is not supported for detectors"):
        export_tflite(detector, tmp_path / "q.tflite", quantization=quantization,
                      representative_data=images)
    assert not (tmp_path / "q.tflite").exists()


# ------------------------------------------------------------------ aw-export


@pytest.fixture(scope="module")
def saved_detector(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "detector.keras"
    detector.save(path)
    return path


@pytest.mark.slow  # ~70 s: converts and verifies all three artifacts; the pieces run by default
def test_aw_export_on_a_saved_detector(saved_detector, detector, tmp_path, capsys):
    out = tmp_path / "exported"
    data = tmp_path / "images.npy"
    np.save(data, _batch()[0][:3])  # images with detections
    code = cli.main([str(saved_detector), "--out", str(out), "--verify-data", str(data)])
    captured = capsys.readouterr()
    assert code == 0, captured.out[-3000:] + captured.err[-3000:]
    name = "detector"  # the .keras file's stem
    assert sorted(os.listdir(out)) == sorted([
        "saved_model", f"{name}_float32.tflite", f"{name}.onnx", f"{name}_decoder.json",
        "verification.json", "verification.md"])
    assert os.listdir(out / "saved_model") == ["1"]
    assert "| artifact | format | precision | size (MB) | raw max abs err |" in captured.out
    report = json.loads((out / "verification.json").read_text())
    assert report["failures"] == []
    results = report["results"]
    assert [r["format"] for r in results] == ["saved_model", "tflite", "onnx"]
    assert all(r["passed"] and r["precision"] == "float32" for r in results)
    assert all(r["detection"]["detections"] > 0 for r in results)
    assert (out / "verification.md").read_text().count("| PASS |") == 3


def test_aw_export_refuses_int8_for_a_detector(saved_detector, tmp_path, capsys):
    out = tmp_path / "exported"
    code = cli.main([str(saved_detector), "--out", str(out), "--quantization", "none,int8"])
    captured = capsys.readouterr()
    assert code == 2
    assert "--quantization int8 is not supported for detectors" in captured.err
    assert not out.exists()


def test_aw_export_checks_a_detectors_class_names(saved_detector, detector, tmp_path, capsys):
    import shutil

    from aw_keras.export import labels

    assert labels.class_count(detector) == 3  # labels 0..K-1 of the raw cls_logits
    model_path = tmp_path / "best.keras"
    shutil.copy(saved_detector, model_path)
    (tmp_path / "run.json").write_text(json.dumps({"class_names": ["circle", "square"]}))
    out = tmp_path / "exported"
    code = cli.main([str(model_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "holds 2 class names" in err and "has 3 classes (labels 0..2)" in err, err
    assert not out.exists()
