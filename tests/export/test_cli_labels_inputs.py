"""aw-export and what a deployed model needs to be used: class names (labels.txt
from the run.json next to the model or --class-names, checked against the
model), raw 0-255 images for a model that normalises inside, artifact names
after the .keras file, standard JSON, and refused commands that leave nothing."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from aw_keras.export import cli
from aw_keras.export import labels

NAMES = ["circle", "square", "triangle"]


def run_main(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    with open(path) as handle:
        return json.loads(handle.read(), parse_constant=refuse)


@pytest.fixture(scope="module")
def raw_model():
    """A classifier in aw-train's form: raw 0-255 images in, normalised inside
    (a Rescaling, and a float32 Normalization as aw-train's input_normalization)."""
    from aw_keras.layers import AWConv2D

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.16],
                                   dtype="float32", name="input_normalization")(x)
    x = AWConv2D(4, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture
def run_dir(raw_model, tmp_path):
    """What aw-train leaves: best.keras next to a run.json naming the classes."""
    directory = tmp_path / "run"
    directory.mkdir()
    raw_model.save(directory / "best.keras")
    (directory / "run.json").write_text(json.dumps({"model": "tiny", "class_names": NAMES}))
    return directory


def test_raw_image_model_exports_with_its_class_names(raw_model, run_dir, tmp_path, capsys):
    from aw_keras.export.verify import make_runner

    out = tmp_path / "exported"
    code, stdout, err = run_main([run_dir / "best.keras", "--out", out], capsys)
    assert code == 0, stdout[-3000:] + err[-3000:]
    # named after the file, not Keras's model name ("functional")
    assert sorted(os.listdir(out)) == ["best.onnx", "best_float32.tflite", "labels.txt",
                                       "saved_model", "verification.json", "verification.md"]
    assert (out / "labels.txt").read_text() == "circle\nsquare\ntriangle\n"
    assert (out / "saved_model" / "1" / "assets.extra" / "labels.txt").read_text() == \
        "circle\nsquare\ntriangle\n"
    report = strict_json(out / "verification.json")
    assert report["failures"] == [] and all(r["passed"] for r in report["results"])
    assert report["labels"]["names"] == NAMES and report["labels"]["passed"] is True
    # verified on raw pixel values, the model's contract
    assert report["inputs"]["max"] > 1.0 and "0-255" in report["inputs"]["contract"]
    assert "input_normalization" in report["inputs"]["contract"]
    assert "class names: 3 class names for 3 classes" in stdout
    # each artifact, run on its own on raw uint8 images, answers as Keras does
    images = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    batch = images.astype(np.float32)
    expected = np.asarray(raw_model(batch, training=False))
    for artifact in (out / "saved_model" / "1", out / "best_float32.tflite", out / "best.onnx"):
        np.testing.assert_allclose(make_runner(str(artifact))(batch), expected, atol=1e-5,
                                   err_msg=str(artifact))


@pytest.mark.parametrize("source", ["option", "run.json"])
def test_class_names_that_do_not_fit_are_refused(source, run_dir, tmp_path, capsys):
    argv = [run_dir / "best.keras", "--out", tmp_path / "exported"]
    if source == "option":
        names_file = tmp_path / "names.txt"
        names_file.write_text("cat\ndog\n")
        argv += ["--class-names", names_file]
        needle = "names.txt' holds 2 class names"
    else:
        (run_dir / "run.json").write_text(json.dumps({"class_names": NAMES + ["star"]}))
        needle = "run.json' holds 4 class names"
    code, _, err = run_main(argv, capsys)
    assert code == 2, err
    assert needle in err and "has 3 classes" in err, err
    assert not (tmp_path / "exported").exists()


def test_class_names_option_wins_and_missing_names_are_reported(run_dir, tmp_path, capsys):
    from aw_keras.export import export_saved_model

    names_file = tmp_path / "names.txt"
    names_file.write_text("a\nb\nc\n\n")
    model = keras.saving.load_model(run_dir / "best.keras")
    assert cli._class_names(cli.build_parser().parse_args(
        [str(run_dir / "best.keras"), "--out", "x", "--class-names", str(names_file)]),
        model)[0] == ["a", "b", "c"]
    (run_dir / "run.json").write_text(json.dumps({"model": "tiny"}))  # no names recorded
    names, report = cli._class_names(cli.build_parser().parse_args(
        [str(run_dir / "best.keras"), "--out", "x"]), model)
    assert names is None and report["passed"] is None and "no class names" in report["check"]
    # the Python API: the names inside the SavedModel, checked first
    path = export_saved_model(model, tmp_path / "sm", class_names=NAMES)
    assert labels.read_labels(os.path.join(path, "assets.extra", "labels.txt")) == NAMES
    with pytest.raises(ValueError, match="holds 2 class names.*has 3 classes"):
        export_saved_model(model, tmp_path / "sm2", class_names=["a", "b"])
    assert not (tmp_path / "sm2").exists()


@pytest.mark.parametrize("content,needle", [
    ("truncated", "not a zip file"),
    ("text", "not a zip file"),
    ("zip", "holds no config.json"),
])
def test_a_damaged_keras_file_is_a_usage_error(content, needle, raw_model, tmp_path, capsys):
    path = tmp_path / "best.keras"
    if content == "truncated":
        raw_model.save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "text":
        path.write_text("not a model")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    out = tmp_path / "exported"
    code, _, err = run_main([path, "--out", out], capsys)
    assert code == 2, err
    assert f"model file {str(path)!r} is not a valid .keras archive" in err and needle in err, err
    assert "File not found" not in err
    assert not out.exists()


def test_read_labels_refuses_what_is_not_one_name_per_label(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(" cat \ndog\n\n")
    assert labels.read_labels(path) == ["cat", "dog"]
    for text, needle in (("", "holds no class names"), ("cat\n\ndog\n", "label 1 is ''"),
                         ("cat\ncat\n", "labels 0 and 1 are both named 'cat'")):
        path.write_text(text)
        with pytest.raises(ValueError, match=needle):
            labels.read_labels(path)
    with pytest.raises(ValueError, match="list of class names"):
        labels.validate_class_names("cat")
