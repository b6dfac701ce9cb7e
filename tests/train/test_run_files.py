"""What an aw-train classification run writes: models that take raw images, the
class names, no optimizer in best.keras / last.keras, honest notes about the test
split and top-5, files that are not images left out by name."""

import json
import os
import warnings
import zipfile

import h5py
import numpy as np
import pytest

from aw_keras.train import cli
from train_helpers import TINY_KWARGS, run_main


def _read(path):
    with open(path) as f:
        return json.load(f)


def _raw_images(root, split):
    """(uint8 images, labels) of ``root/split/<class>/*.png`` as read from the files,
    in the order of the source (sorted class directories, sorted files)."""
    import tensorflow as tf

    images, labels = [], []
    for label, name in enumerate(sorted(os.listdir(os.path.join(root, split)))):
        directory = os.path.join(root, split, name)
        for file in sorted(os.listdir(directory)):
            blob = open(os.path.join(directory, file), "rb").read()
            if not blob.startswith(b"\x89PNG"):
                continue
            images.append(tf.io.decode_png(blob).numpy())
            labels.append(label)
    return np.stack(images), np.asarray(labels)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch run on a 2-class folder without test/, one of whose
    *.png files is not an image, then resumed (nothing left to train)."""
    import pytest as _pytest

    from train_helpers import write_folder

    root = str(tmp_path_factory.mktemp("run_files"))
    data_dir = write_folder(os.path.join(root, "data"))
    bad = os.path.join(data_dir, "train", "top", "005_bad.png")
    with open(bad, "w") as f:
        f.write("not a png\n")
    out = os.path.join(root, "run")
    capsys = _CaptureCli()
    argv = ("resnet_cifar", "--dataset", f"folder:{data_dir}", "--epochs", "1",
            "--batch-size", "4", "--model-kwargs", TINY_KWARGS, "--attention-images", "0",
            "--verbose", "0", "--checkpoint-steps", "0", "--out", out)
    status, stdout, err = capsys.run(*argv)
    if status != 0:
        _pytest.fail(f"aw-train failed ({status}): {err[-3000:]}")
    status, resumed, err = capsys.run(*argv, "--resume")
    if status != 0:
        _pytest.fail(f"aw-train --resume failed ({status}): {err[-3000:]}")
    return {"out": out, "data": data_dir, "bad": bad, "stdout": stdout, "resumed": resumed}


def test_resuming_a_finished_run_says_so_in_words(finished_run):
    assert "the 1 epoch was already done; evaluating." in finished_run["resumed"]
    assert "epochs were" not in finished_run["resumed"]


class _CaptureCli:
    """Runs cli.main, capturing what it prints (a module fixture cannot use capsys)."""

    def run(self, *argv):
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(list(argv))
            except SystemExit as exit_:
                status = exit_.code
        return status, out.getvalue(), err.getvalue()


def test_saved_model_takes_raw_images_and_gives_the_reported_error(finished_run):
    import keras

    import aw_keras  # noqa: F401 - registers the custom layers
    from aw_keras import data

    out = finished_run["out"]
    metrics = _read(os.path.join(out, "metrics.json"))
    best = keras.saving.load_model(os.path.join(out, "best.keras"), compile=False)
    images, labels = _raw_images(finished_run["data"], "val")  # test = val here
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    raw = best.predict(images, verbose=0)
    # The reported error of the best model, from raw uint8 pixels as read from the files.
    error = float(np.mean(raw.argmax(-1) != labels))
    assert error == pytest.approx(metrics["best_top1_error"], abs=1e-6)
    # The same outputs as on what the pipeline feeds (raw pixels as float32).
    source = data.get_source(f"folder:{finished_run['data']}")
    fed, fed_labels = next(iter(data.eval_dataset(source, "test", data.get_preset("small"),
                                                  len(labels))))
    np.testing.assert_array_equal(fed_labels.numpy(), labels)
    np.testing.assert_array_equal(fed.numpy(), images.astype(np.float32))
    np.testing.assert_allclose(raw, best.predict(fed.numpy(), verbose=0), atol=1e-6)
    # The normalisation is the model's first layer, with the preset's statistics on
    # the 0..255 scale.
    layer = best.get_layer("input_normalization")
    assert isinstance(layer, keras.layers.Normalization) and layer.dtype_policy.name == "float32"
    mean, std = data.normalization(source, data.get_preset("small"))
    np.testing.assert_allclose(np.ravel(layer.mean), 255.0 * np.asarray(mean), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.ravel(layer.variance)), 255.0 * np.asarray(std),
                               rtol=1e-6)


def test_class_names_test_split_and_top5_are_recorded(finished_run):
    out = finished_run["out"]
    run, metrics = _read(os.path.join(out, "run.json")), _read(os.path.join(out, "metrics.json"))
    for record in (run, metrics):
        assert record["class_names"] == ["bottom", "top"]  # label i = sorted directory i
        assert record["test_is_validation"] is True
    assert "test split IS the validation split" in metrics["note"]
    assert "test = validation split" in finished_run["stdout"]
    # 2 classes: top-5 accuracy would always be 1; it is not reported.
    assert metrics["top5_error"] is None and metrics["best_top5_error"] is None
    assert "top-5" not in finished_run["stdout"]
    history = _read(os.path.join(out, "history.json"))
    assert not [k for h in history for k in h if "top5" in k]


def test_a_file_that_is_not_an_image_is_left_out_by_name(finished_run):
    out, bad = finished_run["out"], finished_run["bad"]
    run, metrics = _read(os.path.join(out, "run.json")), _read(os.path.join(out, "metrics.json"))
    assert list(run["skipped_files"]) == [bad] and list(metrics["skipped_files"]) == [bad]
    assert "not a PNG/JPEG/GIF/BMP image" in run["skipped_files"][bad]
    assert repr(bad) in finished_run["stdout"]


@pytest.mark.parametrize("name", ["best.keras", "last.keras"])
def test_saved_models_hold_no_optimizer_and_load_without_warnings(finished_run, name):
    import keras

    import aw_keras  # noqa: F401

    path = os.path.join(finished_run["out"], name)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        with archive.open("model.weights.h5") as blob, h5py.File(blob, "r") as weights:
            groups = []
            weights.visit(groups.append)
    assert groups and not [g for g in groups if "optimizer" in g], groups
    assert not config.get("compile_config")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(path)  # compile=True: the default
    assert not [str(w.message) for w in caught if "optimizer" in str(w.message).lower()]
    assert model.count_params() > 0


def test_init_from_a_keras_file_without_input_normalisation(finished_run, tmp_path):
    """A .keras written before models carried their normalisation took normalised
    images; the converted model puts the pipeline's normalisation in front of it and
    starts with exactly its accuracy."""
    import keras

    from aw_keras import applications
    from aw_keras import data

    source = data.get_source(f"folder:{finished_run['data']}")
    preset = data.get_preset("small")
    old = applications.get_model("resnet_cifar", input_shape=(8, 8, 1), classes=2,
                                 **json.loads(TINY_KWARGS))
    old_path = str(tmp_path / "old.keras")
    old.save(old_path)
    mean, std = data.normalization(source, preset)
    images, labels = _raw_images(finished_run["data"], "val")
    normalised = (images.astype(np.float32) / 255.0 - np.asarray(mean)) / np.asarray(std)
    probs = old.predict(normalised, verbose=0)
    old_accuracy = float(np.mean(probs.argmax(-1) == labels))
    old_loss = float(keras.losses.CategoricalCrossentropy(label_smoothing=preset.label_smoothing)(
        np.eye(2)[labels], probs))

    out = str(tmp_path / "tuned")
    status, _, err = _CaptureCli().run(
        "resnet_cifar", "--dataset", f"folder:{finished_run['data']}", "--epochs", "1",
        "--batch-size", "4", "--model-kwargs", TINY_KWARGS, "--attention-images", "0",
        "--verbose", "0", "--checkpoint-steps", "0", "--init-from", old_path, "--out", out)
    assert status == 0, err[-3000:]
    init = _read(os.path.join(out, "metrics.json"))["init_eval"]
    assert init["val_accuracy"] == pytest.approx(old_accuracy, abs=1e-9)
    assert init["val_loss"] == pytest.approx(old_loss, rel=1e-4)
    tuned = keras.saving.load_model(os.path.join(out, "last.keras"), compile=False)
    assert isinstance(tuned.get_layer("input_normalization"), keras.layers.Normalization)
    assert [layer.name for layer in tuned.layers[:3]] == ["image", "input_normalization",
                                                          old.layers[1].name]
