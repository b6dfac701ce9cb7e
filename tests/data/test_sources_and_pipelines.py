"""aw_keras.data: sources (Fashion-MNIST files, image folders, tfds) and the
deterministic tf.data pipelines. All data is made locally; nothing touches the network."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from aw_keras import data
from aw_keras.data import sources


def _write_idx(directory, prefix, images, labels):
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
        f.write((2051).to_bytes(4, "big") + len(images).to_bytes(4, "big")
                + (28).to_bytes(4, "big") + (28).to_bytes(4, "big") + images.tobytes())
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
        f.write((2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path, "train", train, (np.arange(60) % 10).astype(np.uint8))
    _write_idx(tmp_path, "t10k", test, (np.arange(12) % 10).astype(np.uint8))
    return tmp_path, train, test


def test_fashion_mnist_files_are_read_exactly(fake_fashion, monkeypatch):
    directory, train, test = fake_fashion
    monkeypatch.setenv("AW_KERAS_FASHION_MNIST_DIR", str(directory))
    source = data.get_source("fashion_mnist")
    assert source.num_classes == 10 and source.image_shape == (28, 28, 1)
    assert source.split("train").num_examples == 50
    assert source.split("validation").num_examples == 10
    np.testing.assert_array_equal(source.split("train").images[..., 0], train[:50])
    np.testing.assert_array_equal(source.split("validation").images[..., 0], train[50:])
    np.testing.assert_array_equal(source.split("test").images[..., 0], test)
    np.testing.assert_array_equal(source.split("test").labels, np.arange(12) % 10)


def test_truncated_fashion_file_is_a_clear_error(fake_fashion):
    directory, _, _ = fake_fashion
    path = os.path.join(directory, "t10k-images-idx3-ubyte.gz")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="damaged|disagree"):
        data.load_fashion_mnist(str(directory))


def test_no_data_anywhere_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "fashion_mnist_dirs", lambda: [str(tmp_path / "nothing")])
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.get_source("fashion_mnist")
    with pytest.raises(data.DataError, match="Unknown dataset 'cifar11'"):
        data.get_source("cifar11")


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    for split, count in (("train", 5), ("val", 3)):
        for label, name in enumerate(("cat", "dog")):
            directory = root / split / name
            directory.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((10, 12, 3), 40 + 100 * label + i, np.uint8)
                (directory / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def test_image_folder_source_and_pipelines(image_folder):
    source = data.get_source(f"folder:{image_folder}")
    assert source.class_names == ("cat", "dog")
    assert source.image_shape == (10, 12, 3)
    assert source.split("train").num_examples == 10
    assert source.split("test").num_examples == 6  # no test/: falls back to val/
    assert source.test_is_validation and source.label_names() == ["cat", "dog"]
    preset = data.get_preset("small")
    ds, steps = data.train_dataset(source, preset, 4, seed=1, start_epoch=0, end_epoch=2)
    batches = list(ds)
    assert steps == 2 and len(batches) == 4
    images, labels = batches[0]
    assert images.shape == (4, 10, 12, 3) and images.dtype == tf.float32
    assert set(labels.numpy()) <= {0, 1}
    evaluation = list(data.eval_dataset(source, "validation", preset, 4))
    assert [int(x.shape[0]) for x, _ in evaluation] == [4, 2]
    # Eval images are the decoded pixels as they are (float32 0..255, the model
    # normalises them): image i of class c has the value 40 + 100 c + i.
    x, y = next(iter(data.eval_dataset(source, "validation", preset, 6)))
    assert x.dtype == tf.float32
    expected = 40 + 100 * y.numpy() + np.array([0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(x.numpy(), np.broadcast_to(
        expected[:, None, None, None].astype(np.float32), x.shape))
    # Training images are raw pixels too (cropped/flipped copies of those values).
    images, _ = batches[0]
    assert set(np.unique(images.numpy())) <= {0.0} | {40.0 + 100 * c + i for c in (0, 1)
                                                       for i in range(5)}


def test_image_folder_errors(tmp_path, image_folder):
    with pytest.raises(data.DataError, match="does not exist"):
        data.get_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(data.DataError, match="val/"):
        data.get_source(f"folder:{tmp_path / 'only_train'}")


def test_empty_class_directory_is_refused_by_name(image_folder):
    empty = image_folder / "train" / "bird"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(data.DataError, match="bird.*holds no \\*.png/\\*.jpg images") as error:
        data.get_source(f"folder:{image_folder}")
    assert repr(str(empty)) in str(error.value)


def test_files_that_are_not_images_are_left_out_by_name(image_folder, caplog):
    bad = image_folder / "train" / "cat" / "005.png"
    bad.write_text("not a png\n")
    (image_folder / "val" / "dog" / "empty.jpg").write_bytes(b"")
    with caplog.at_level("WARNING", logger="aw_keras.data"):
        source = data.get_source(f"folder:{image_folder}")
    assert source.skipped_files == {
        str(bad): "not a PNG/JPEG/GIF/BMP image",
        str(image_folder / "val" / "dog" / "empty.jpg"): "empty file"}
    assert str(bad) in caplog.text and "left out 2 file(s)" in caplog.text
    assert str(bad) not in source.split("train").files
    assert source.split("train").num_examples == 10 and source.split("validation").num_examples == 6
    # Every file left is read by the pipeline without error.
    assert len(list(data.eval_dataset(source, "train", data.get_preset("small"), 4))) == 3
    # A class whose every file is broken is a class without images: refused.
    for path in (image_folder / "train" / "dog").iterdir():
        path.write_text("broken")
    with pytest.raises(data.DataError, match="dog.*5 file\\(s\\) that are not images"):
        data.get_source(f"folder:{image_folder}")


def test_sample_images_of_distinct_classes(image_folder):
    source = data.get_source(f"folder:{image_folder}")
    preset = data.get_preset("small")
    images, labels = data.sample_images(source, "validation", preset, 4, distinct_classes=True)
    assert labels.tolist() == [0, 1, 0, 1]  # the folder lists all cats first
    np.testing.assert_array_equal(images[:, 0, 0, 0], [40, 140, 41, 141])
    _, first = data.sample_images(source, "validation", preset, 3)
    assert first.tolist() == [0, 0, 0]
    memory = _memory_source()
    _, labels = data.sample_images(memory, "validation", preset, 6, distinct_classes=True)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]


def _memory_source(n=40):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = (np.arange(n) % 4).astype(np.int32)
    split = data.Split(n, labels=labels, images=images)
    return data.Source("memory", {"train": split, "validation": split, "test": split}, 4, (8, 8, 1))


def test_training_stream_is_a_pure_function_of_seed_epoch_and_step():
    source, preset = _memory_source(), data.get_preset("small")
    full, steps = data.train_dataset(source, preset, 8, seed=5, start_epoch=0, end_epoch=3)
    full = [(x.numpy(), y.numpy()) for x, y in full]
    assert steps == 5 and len(full) == 15
    # Resume at epoch 1, step 2: exactly the batches the uninterrupted run fed.
    resumed, _ = data.train_dataset(source, preset, 8, seed=5, start_epoch=1, end_epoch=3,
                                    skip_steps=2)
    resumed = [(x.numpy(), y.numpy()) for x, y in resumed]
    assert len(resumed) == 8
    for (xa, ya), (xb, yb) in zip(full[7:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Epochs are shuffled differently; each epoch sees every example once.
    epoch0 = np.concatenate([y for _, y in full[:5]])
    epoch1 = np.concatenate([y for _, y in full[5:10]])
    assert sorted(epoch0) == sorted(source.split("train").labels)
    assert not np.array_equal(full[0][0], full[5][0])
    other, _ = data.train_dataset(source, preset, 8, seed=6, start_epoch=0, end_epoch=1)
    assert not np.array_equal(next(iter(other))[0].numpy(), full[0][0])
    assert len(epoch1) == 40


def test_batch_larger_than_the_data_is_a_clear_error():
    with pytest.raises(data.DataError, match="fewer than one batch"):
        data.train_dataset(_memory_source(), data.get_preset("small"), 64, 0, 0, 1)


def test_imagenet_preset_is_the_papers_recipe_and_pipeline_shapes():
    preset = data.get_preset("imagenet")
    assert (preset.momentum, preset.weight_decay, preset.step_epochs, preset.step_factor,
            preset.epochs) == (0.9, 1e-4, 30, 0.1, 90)
    assert preset.learning_rate(256) == pytest.approx(0.1)
    assert preset.learning_rate(64) == pytest.approx(0.025)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 300, 260, 3), dtype=np.uint8)
    split = data.Split(4, labels=np.zeros(4, np.int32), images=images)
    source = data.Source("big", {"train": split, "validation": split, "test": split}, 2,
                         (300, 260, 3))
    ds, _ = data.train_dataset(source, preset, 2, 0, 0, 1)
    x, _ = next(iter(ds))
    assert x.shape == (2, 224, 224, 3)
    x, _ = next(iter(data.eval_dataset(source, "validation", preset, 2)))
    assert x.shape == (2, 224, 224, 3)
    # Resize 256 (shorter side 260 -> 256) + center crop 224 of a constant image
    # is that constant; the preprocessing layer normalises it with the preset's
    # statistics (no dataset statistics here).
    flat = np.full((1, 300, 260, 3), 128, np.uint8)
    source.splits["validation"] = data.Split(1, labels=np.zeros(1, np.int32), images=flat)
    x, _ = next(iter(data.eval_dataset(source, "validation", preset, 1)))
    np.testing.assert_allclose(x.numpy()[0, 100, 100], [128.0] * 3, atol=1e-4)
    layer = data.pipeline.preprocessing_layer(source, preset)
    expected = (128 / 255 - np.array(preset.mean)) / np.array(preset.std)
    np.testing.assert_allclose(np.asarray(layer(x))[0, 100, 100], expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(flat[:, :224, :224]))[0, 5, 5], expected,
                               atol=1e-5)  # uint8 input works the same
    with pytest.raises(ValueError, match="Unknown preset"):
        data.get_preset("cifar")


def test_library_errors_name_the_python_argument_not_a_command_line_option(tmp_path):
    missing = str(tmp_path / "missing")
    cases = [
        (lambda: data.get_source(""), "`spec` must be a non-empty string"),
        (lambda: data.get_source("tfds:"), "`spec` 'tfds:' needs a dataset name"),
        (lambda: data.get_source("cifar11"), "'tfds:NAME' with `data_dir`"),
        (lambda: data.get_source("fashion_mnist", missing), f"`data_dir` '{missing}' does not"),
        (lambda: data.load_fashion_mnist(str(tmp_path)), "Fashion-MNIST files .* are not in"),
        (lambda: data.train_dataset(_memory_source(), data.get_preset("small"), 64, 0, 0, 1),
         "Use a smaller `batch_size`"),
    ]
    for call, message in cases:
        with pytest.raises(data.DataError, match=message) as error:
            call()
        assert "--dataset" not in str(error.value) and "--data-dir" not in str(error.value)
        assert "--batch-size" not in str(error.value)


def test_tfds_source_under_mock_data_and_unprepared_error(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DataError, match="`data_dir` '.*' does not exist"):
        data.load_tfds("mnist", str(tmp_path / "missing"))
    with pytest.raises(data.DataError, match="not prepared.*pass DIR as `data_dir`") as error:
        data.get_source("tfds:mnist", str(tmp_path))
    assert "--data-dir" not in str(error.value)
    # mock_data serves any split of a builder without split metadata; the source
    # counts the examples of the splits it is served.
    with tfds.testing.mock_data(num_examples=20):
        source = data.get_source("tfds:mnist", str(tmp_path))
        assert source.num_classes == 10 and source.image_shape == (28, 28, 1)
        assert source.label_names() == [str(i) for i in range(10)]
        assert not source.test_is_validation  # mock data serves a test split of its own
        preset = data.get_preset("small")
        ds, steps = data.train_dataset(source, preset, 5, 0, 0, 1, num_examples=20)
        batches = list(ds)
        assert steps == 4 and len(batches) == 4
        assert batches[0][0].shape == (5, 28, 28, 1)
        assert batches[0][1].numpy().max() < 10
        assert source.split("validation").num_examples == 20


def test_prepared_tfds_dataset_is_read_from_its_files_with_its_split_metadata(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class AwKerasTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, supervised_keys=("image", "label"),
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "test": self._generate_examples(6)}

        def _generate_examples(self, count):
            for i in range(count):
                yield i, {"image": np.full((8, 8, 1), 20 * i, np.uint8), "label": i % 3}

    AwKerasTinyImages(data_dir=str(tmp_path)).download_and_prepare()
    # Not registered: tfds.builder finds the prepared files in data_dir.
    source = data.get_source("tfds:aw_keras_tiny_images", str(tmp_path))
    assert source.num_classes == 3 and source.class_names == ("a", "b", "c")
    assert source.label_names() == ["a", "b", "c"]
    assert source.image_shape == (8, 8, 1)
    assert {k: (v.num_examples, v.tfds_split) for k, v in source.splits.items()} == {
        "train": (12, "train"), "validation": (6, "test"), "test": (6, "test")}
    assert source.test_is_validation  # one split serves both: said so
    preset = data.get_preset("small")
    ds, steps = data.train_dataset(source, preset, 4, 0, 0, 1)
    assert steps == 3 and len(list(ds)) == 3
    _, labels = next(iter(data.eval_dataset(source, "test", preset, 6)))
    assert sorted(labels.numpy()) == [0, 0, 1, 1, 2, 2]
