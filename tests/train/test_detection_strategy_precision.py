"""aw-train detection runs with --mixed-precision (mixed_bfloat16 on CPU) and
--strategy mirrored (two replicas: AW_TRAIN_CPU_REPLICAS=2 splits the CPU).

Each run is a subprocess: a global policy and logical devices cannot be undone in
the test process. Tiny runs: 64 px, 16 training / 8 validation images, batch 8.
The mirrored crash + --resume test is marked slow (~130 s)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="keras-hub (the 'detection' extra) is not installed")

from aw_keras.train import cli  # noqa: E402
from train_helpers import read_history  # noqa: E402
from train_helpers import run_main  # noqa: E402
from train_helpers import subprocess_env  # noqa: E402
from train_helpers import train_command  # noqa: E402
from train_helpers import write_detection_set  # noqa: E402

SMALL = {"anchor_size": 4, "rpn_pre_nms_top_k_train": 200, "rpn_post_nms_top_k_train": 100,
         "rpn_pre_nms_top_k_test": 100, "rpn_post_nms_top_k_test": 50,
         "roi_samples_per_image": 64, "representation_size": 128}
MODELS = {"faster_rcnn": ("aw_resnet_small_fpn", SMALL), "retinanet": ("resnet_small_fpn", {})}


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return write_detection_set(tmp_path_factory, train_images=16, val_images=8)


def _argv(coco_dir, out, detector, epochs=1, *flags):
    model, detector_kwargs = MODELS[detector]
    return [model, "--detector", detector, "--dataset", f"coco:{coco_dir}",
            "--image-size", "64", "--train-examples", "16", "--val-examples", "8",
            "--batch-size", "8", "--epochs", str(epochs),
            "--detector-kwargs", json.dumps(detector_kwargs), "--attention-images", "1",
            "--verbose", "2", "--out", out, *flags]


def _python(code, env, timeout=300):
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_finished(out, epochs):
    history = read_history(out)
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    for h in history:
        losses = {k: v for k, v in h.items() if k.endswith("loss")}
        assert "loss" in losses and "val_loss" in losses, h
        assert all(np.isfinite(v) for v in losses.values()), h
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["epochs"] == epochs
    assert np.isfinite(metrics["map"]) and 0.0 <= metrics["map"] <= 1.0
    return history, metrics


# The saved models, loaded in a fresh float32 process: the layers' policy, the
# variables' dtype and float32 predictions.
LOAD_CHECK = """
import json, sys, keras, numpy as np
import aw_keras.detection
from aw_keras.train.run import all_layers
report = {}
for name in ("last.keras", "best.keras"):
    model = keras.saving.load_model(sys.argv[1] + "/" + name)
    convs = [l for l in all_layers(model) if isinstance(l, keras.layers.Conv2D)]
    backbone = [l for l in all_layers(model.backbone) if isinstance(l, keras.layers.Conv2D)]
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    predictions = model.predict(images, verbose=0)
    report[name] = {
        "class": type(model).__name__, "convs": len(convs),
        "policies": sorted({l.dtype_policy.name for l in convs if l.name != "fpn_p7"}),
        "backbone_policies": sorted({l.dtype_policy.name for l in backbone
                                     if l.name != "fpn_p7"}),
        "float32_convs": sorted(l.name for l in convs if l.dtype_policy.name == "float32"),
        "variable_dtypes": sorted({str(v.dtype) for v in model.weights}),
        "prediction_dtypes": {k: str(np.asarray(v).dtype) for k, v in predictions.items()},
        "finite": all(bool(np.isfinite(np.asarray(v)).all()) for v in predictions.values()),
        "global_policy": keras.mixed_precision.global_policy().name,
    }
print(json.dumps(report))
"""


# Both slow (~100 s and ~60 s): a whole mixed_bfloat16 run and two reloads. By default,
# aw-train's mixed-precision run and reload are checked on a classifier
# (test_precision_and_xla.py) and a detector's mixed-precision fit in
# tests/detection/test_faster_rcnn_precision_strategy.py.
@pytest.mark.slow
@pytest.mark.parametrize("detector", ["retinanet", "faster_rcnn"])
def test_mixed_precision_run_saves_mixed_models(coco_dir, tmp_path, detector):
    out = str(tmp_path / "run")
    env = subprocess_env()
    done = subprocess.run(train_command(*_argv(coco_dir, out, detector, 1, "--mixed-precision")),
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "1 replica(s), policy mixed_bfloat16" in done.stdout, done.stdout[-2000:]
    _check_finished(out, 1)
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["config"]["mixed_precision"] is True
    assert run["identity"]["mixed_precision"] is True and run["config"]["strategy"] is None

    report = _python(LOAD_CHECK.replace("sys.argv[1]", repr(out)), env)
    expected_class = {"retinanet": "RetinaNet", "faster_rcnn": "FasterRCNN"}[detector]
    for name, info in report.items():
        assert info["class"] == expected_class, (name, info)
        assert info["convs"] > 10, (name, info)
        # every conv layer, backbone included, computes in bfloat16 after reloading, but
        # RetinaNet's P6 -> P7 conv on a 1x1 map (float32: a bfloat16 CPU kernel bug)
        assert info["policies"] == info["backbone_policies"] == ["mixed_bfloat16"], (name, info)
        assert info["float32_convs"] == (["fpn_p7"] if detector == "retinanet" else []), info
        assert "float32" in info["variable_dtypes"], (name, info)
        assert not any("16" in dtype for dtype in info["variable_dtypes"]), (name, info)
        assert info["prediction_dtypes"] == {"boxes": "float32", "confidence": "float32",
                                             "labels": "int32", "num_detections": "int32"}, info
        assert info["finite"], (name, info)
        assert info["global_policy"] == "float32"  # loading leaves the process's policy


@pytest.mark.slow  # ~45 s; the two-replica evaluation runs by default (below)
def test_mirrored_two_replicas_retinanet(coco_dir, tmp_path):
    out = str(tmp_path / "run")
    done = subprocess.run(
        train_command(*_argv(coco_dir, out, "retinanet", 1, "--strategy", "mirrored")),
        env=subprocess_env(AW_TRAIN_CPU_REPLICAS="2"), capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # 16 images, global batch 8: 2 steps of 4 images per replica
    assert "2 steps/epoch of 8" in done.stdout, done.stdout[-2000:]
    assert "2 replica(s), policy float32" in done.stdout, done.stdout[-2000:]
    _check_finished(out, 1)
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["config"]["strategy"] == "mirrored" and run["config"]["mixed_precision"] is False
    for name in ("last.keras", "best.keras"):
        assert os.path.getsize(os.path.join(out, name)) > 0


@pytest.mark.slow  # ~130 s: two aw-train processes
def test_mirrored_two_replicas_then_resume(coco_dir, tmp_path):
    """faster_rcnn on two CPU replicas: epoch 1, a crash after its checkpoint, then
    --resume finishes epoch 2 (on two replicas again)."""
    out = str(tmp_path / "run")
    env = subprocess_env(AW_TRAIN_CPU_REPLICAS="2")
    argv = _argv(coco_dir, out, "faster_rcnn", 2, "--strategy", "mirrored")
    crash_after_first_epoch = (
        "import sys\n"
        "from aw_keras.train import cli, run\n"
        "original = run.RunKeeper.on_epoch_end\n"
        "def on_epoch_end(self, epoch, logs=None):\n"
        "    original(self, epoch, logs)\n"
        "    if epoch == 0:\n"
        "        print('simulated crash', flush=True)\n"
        "        sys.exit(3)\n"
        "run.RunKeeper.on_epoch_end = on_epoch_end\n"
        f"cli.main({argv!r})\n")
    first = subprocess.run([sys.executable, "-c", crash_after_first_epoch], env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 3, first.stdout[-2000:] + first.stderr[-3000:]
    assert "2 replica(s)" in first.stdout and "2 steps/epoch of 8" in first.stdout, first.stdout
    before = read_history(out)
    assert [h["epoch"] for h in before] == [1]
    assert not os.path.exists(os.path.join(out, "metrics.json"))

    resumed = subprocess.run(train_command(*argv, "--resume"), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "2 replica(s)" in resumed.stdout and "epochs 1->2" in resumed.stdout, resumed.stdout
    after, _ = _check_finished(out, 2)
    assert after[:1] == before
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["config"]["strategy"] == "mirrored" and run["config"]["mixed_precision"] is False
    assert os.path.isfile(os.path.join(out, "last.keras"))


# evaluate_map under two replicas: the detections of each validation batch are the
# model's own (one set per image, equal to a plain call), not the batch twice.
EVALUATE_CHECK = """
import json, numpy as np
from aw_keras.train import run, detection
strategy = run.make_strategy("mirrored")
from aw_keras import data
from aw_keras.detection import evaluation
config = run.RunConfig(model="aw_resnet_small_fpn", detector="faster_rcnn", image_size=64,
                       detector_kwargs=dict(SMALL, score_threshold=0.0))
split = data.load_coco(COCO, "val")
with strategy.scope():
    model = detection.build_detector(config, split.num_classes)
seen = []
class Recorder(evaluation.CocoEvaluator):
    def update(self, predictions, image_ids, scales):
        seen.append((predictions, image_ids))
        return super().update(predictions, image_ids, scales)
import aw_keras.detection
aw_keras.detection.CocoEvaluator = Recorder
dataset = data.detection_dataset(split, 64, 8, with_metadata=True)
result = detection.evaluate_map(model, dataset, split)
images = next(iter(dataset))[0]
direct = model(images, training=False)
predictions, ids = seen[0]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync, "batches": len(seen),
    "rows": int(np.asarray(predictions["num_detections"]).shape[0]), "ids": len(ids),
    "same_counts": np.asarray(predictions["num_detections"]).tolist()
                   == np.asarray(direct["num_detections"]).tolist(),
    "max_box_difference": float(np.abs(np.asarray(predictions["boxes"])
                                       - np.asarray(direct["boxes"])).max()),
    "detections": int(np.asarray(predictions["num_detections"]).sum()),
    "map_finite": bool(np.isfinite(result["map"]))}))
"""


def test_evaluate_map_under_two_replicas_predicts_each_image_once(coco_dir):
    from aw_keras.data import find_coco_splits

    _, val_name = find_coco_splits(coco_dir)
    code = EVALUATE_CHECK.replace("COCO", repr(coco_dir)).replace('"val"', repr(val_name))
    code = code.replace("SMALL", repr(SMALL))
    info = _python(code, subprocess_env(AW_TRAIN_CPU_REPLICAS="2"))
    assert info["replicas"] == 2 and info["batches"] == 1
    assert info["rows"] == info["ids"] == 8, info
    assert info["detections"] > 0 and info["same_counts"], info
    assert info["max_box_difference"] < 1e-3, info
    assert info["map_finite"], info


def test_multiworker_is_a_usage_error(coco_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _argv(coco_dir, str(out), "retinanet", 1, "--strategy", "multiworker")
    code, _, err = run_main(capsys, cli.main, *argv)
    assert code == 2, err
    assert "--strategy 'multiworker' is not supported for detection runs" in err, err
    assert "classification" in err and "--strategy 'mirrored'" in err, err
    assert not out.exists()
