"""tf.data input pipelines: parallel decode, augmentation, batching, prefetch.

The pipelines feed RAW pixels: float32 values 0..255, channels-last, at the size
of `image_shape`. The normalisation of the preset happens inside the model, in
the layer `preprocessing_layer` returns (aw-train puts it at the model's input), so
a saved or exported model takes images as read from their files.

The training stream is a pure function of (seed, epoch, position): every epoch
shuffles with its own seed and augmentation draws stateless random numbers from
the example's global position. Resuming at epoch ``e``, step ``s`` therefore
feeds exactly the batches an uninterrupted run would have fed.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from aw_keras.data.sources import DataError
from aw_keras.data.sources import Split

AUTOTUNE = tf.data.AUTOTUNE
TFDS_SHUFFLE_BUFFER = 10_000


def image_shape(source, preset):
    """The (H, W, C) the model sees for ``source`` under ``preset``."""
    height, width, channels = source.image_shape
    if preset.image_size is not None:
        return (preset.image_size, preset.image_size, channels)
    if height is None or width is None:
        return (32, 32, channels)  # variable-size images under the small preset
    return (height, width, channels)


# The name of the input normalisation layer of the models aw-train builds.
PREPROCESSING_LAYER_NAME = "input_normalization"


def normalization(source, preset):
    """Per-channel (mean, std) on the 0-1 scale: the dataset's if known."""
    channels = source.channels
    mean = source.mean if source.mean is not None else preset.mean
    std = source.std if source.std is not None else preset.std
    mean = tuple(mean) * channels if len(mean) == 1 else tuple(mean)
    std = tuple(std) * channels if len(std) == 1 else tuple(std)
    if len(mean) != channels or len(std) != channels:
        mean, std = (0.5,) * channels, (0.5,) * channels
    return mean, std


def preprocessing_layer(source, preset, name=PREPROCESSING_LAYER_NAME):
    """A float32 ``keras.layers.Normalization`` that maps raw pixels (0..255, any
    real or integer dtype) to ``(x / 255 - mean) / std`` with the per-channel
    `normalization` of ``source`` under ``preset``. Put it at a model's input:

    >>> inputs = keras.Input(image_shape(source, preset))
    >>> x = preprocessing_layer(source, preset)(inputs)

    It has no weights; it stays float32 under a mixed-precision policy."""
    import keras

    mean, std = normalization(source, preset)
    return keras.layers.Normalization(
        mean=[255.0 * m for m in mean], variance=[(255.0 * s) ** 2 for s in std],
        dtype="float32", name=name)


def steps_per_epoch(num_examples, batch_size):
    steps = num_examples // batch_size
    if steps < 1:
        raise DataError(
            f"The training split has {num_examples} examples, fewer than one batch of "
            f"{batch_size}. Use a smaller `batch_size`."
        )
    return steps


class _Loader:
    """Maps an element of the base dataset to (uint8 image, int32 label)."""

    def __init__(self, source, split):
        self.split = split
        self.channels = source.channels
        if split.images is not None:
            self.images = tf.constant(split.images)
            self.labels = tf.constant(split.labels)
            self.kind = "memory"
        elif split.files is not None:
            self.kind = "files"
        else:
            self.kind = "tfds"
            self.builder = source.tfds_builder
            self.image_key, self.label_key = self.builder.info.supervised_keys

    def base(self):
        if self.kind == "memory":
            return tf.data.Dataset.range(self.split.num_examples)
        if self.kind == "files":
            return tf.data.Dataset.from_tensor_slices(
                (self.split.files, self.split.labels.astype(np.int32)))
        ds = self.builder.as_dataset(split=self.split.tfds_split, shuffle_files=False)
        return ds.map(lambda ex: (ex[self.image_key], ex[self.label_key]))

    def buffer(self):
        n = self.split.num_examples
        return n if self.kind != "tfds" else min(n, TFDS_SHUFFLE_BUFFER)

    def __call__(self, element):
        if self.kind == "memory":
            return tf.gather(self.images, element), tf.gather(self.labels, element)
        first, label = element
        if self.kind == "files":
            image = tf.io.decode_image(tf.io.read_file(first), channels=self.channels,
                                       expand_animations=False)
        else:
            image = first
            if image.shape.rank == 2:
                image = image[..., None]
        image.set_shape([None, None, self.channels])
        return tf.cast(image, tf.uint8), tf.cast(label, tf.int32)


def _single(args):
    """tf.data passes tuple elements as several arguments; regroup them."""
    return args[0] if len(args) == 1 else args


def _raw(image):
    """Pixels as float32 0..255 (the model normalises them itself)."""
    return tf.cast(image, tf.float32)


def _resize_to(image, size):
    height, width = size
    return tf.cast(tf.image.resize(image, (height, width), antialias=True), tf.uint8)


def _random_resized_crop(image, size, seed):
    """torchvision RandomResizedCrop: area 8-100%, aspect 3/4-4/3, bilinear."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    return tf.image.resize(image, size, method="bilinear")


def _resize_center_crop(image, resize, size):
    """Shorter side to ``resize``, then the central ``size`` crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(resize, tf.float32) / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, method="bilinear")
    top = (new_shape[0] - size[0]) // 2
    left = (new_shape[1] - size[1]) // 2
    return tf.slice(image, [top, left, 0], [size[0], size[1], -1])


def _train_transform(preset, shape, seed):
    height, width, channels = shape

    def transform(position, image, label):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), position]), num=3)
        if preset.train_augment == "random_resized_crop":
            image = _random_resized_crop(image, (height, width), seeds[0])
            image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
        else:
            if tuple(image.shape[:2]) != (height, width):
                image = _resize_to(image, (height, width))
            if preset.train_augment == "pad_crop_flip" and preset.crop_padding:
                pad = preset.crop_padding
                image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
                image = tf.image.stateless_random_crop(image, (height, width, channels), seeds[0])
        if preset.flip and preset.train_augment != "none":
            image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        image = tf.ensure_shape(_raw(image), (height, width, channels))
        return image, label

    return transform


def _eval_transform(preset, shape):
    height, width, channels = shape

    def transform(image, label):
        if preset.eval_resize:
            image = _resize_center_crop(image, preset.eval_resize, (height, width))
        elif tuple(image.shape[:2]) != (height, width):
            image = _resize_to(image, (height, width))
        image = tf.ensure_shape(_raw(image), (height, width, channels))
        return image, label

    return transform


def _options():
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return options


def train_dataset(source, preset, batch_size, seed, start_epoch, end_epoch,
                  skip_steps=0, num_examples=None):
    """Batches for epochs ``[start_epoch, end_epoch)``, skipping ``skip_steps``
    batches of ``start_epoch`` (a mid-epoch resume). Returns (dataset, steps).

    Images are raw pixels (float32 0..255), augmented in pixel space; labels int32."""
    split = source.split("train").take(num_examples)
    steps = steps_per_epoch(split.num_examples, batch_size)
    per_epoch = steps * batch_size
    loader = _Loader(source, split)
    shape = image_shape(source, preset)
    base, buffer = loader.base(), loader.buffer()

    if not 0 <= start_epoch < end_epoch:
        raise ValueError(f"Need 0 <= start_epoch < end_epoch, got {start_epoch}, {end_epoch}.")
    # One shuffle order per epoch, a pure function of (seed, epoch).
    stream = None
    for epoch in range(start_epoch, end_epoch):
        part = base.shuffle(buffer, seed=(seed * 1_000_003 + epoch) % (2**63 - 1),
                            reshuffle_each_iteration=False).take(per_epoch)
        stream = part if stream is None else stream.concatenate(part)
    stream = stream.enumerate(start=start_epoch * per_epoch).skip(skip_steps * batch_size)
    transform = _train_transform(preset, shape, seed)
    ds = stream.map(lambda position, element: transform(position, *loader(element)),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.with_options(_options()), steps


def eval_dataset(source, split_name, preset, batch_size, num_examples=None):
    """The split in order, batched (last batch partial), no augmentation; images are
    raw pixels (float32 0..255) at the model's input size, labels int32."""
    split = source.split(split_name).take(num_examples)
    loader = _Loader(source, split)
    transform = _eval_transform(preset, image_shape(source, preset))
    ds = loader.base().map(lambda *element: transform(*loader(_single(element))),
                           num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(_options())


def sample_images(source, split_name, preset, count, distinct_classes=False):
    """``count`` images of a split and their labels, as NumPy arrays; the images as
    the pipelines feed them (raw pixels, float32 0..255, the model's input size).

    The first ``count`` images of the split, or with ``distinct_classes`` the first
    image of each class (in label order), then the second of each, and so on: as
    many different classes as the split and ``count`` allow."""
    if not distinct_classes:
        ds = eval_dataset(source, split_name, preset, count, num_examples=count)
        images, labels = next(iter(ds))
        return images.numpy(), labels.numpy()
    split = source.split(split_name)
    if split.labels is not None:  # in memory or files: pick by label, read only those
        picks = _round_robin_by_label(split.labels[:split.num_examples], count)
        subset = Split(len(picks), labels=split.labels[picks],
                       images=None if split.images is None else split.images[picks],
                       files=None if split.files is None else split.files[picks])
        chosen = dataclasses.replace(source, splits={split_name: subset})
        ds = eval_dataset(chosen, split_name, preset, max(1, len(picks)))
        images, labels = next(iter(ds))
        return images.numpy(), labels.numpy()
    # tensorflow-datasets: labels are known only by reading; scan the split's start.
    kept = {}  # label -> up to `count` images
    for x, y in eval_dataset(source, split_name, preset, 64,
                             num_examples=max(64 * count, 1024)):
        for image, label in zip(x.numpy(), y.numpy()):
            group = kept.setdefault(int(label), [])
            if len(group) < count:
                group.append(image)
        if len(kept) >= count:
            break
    labels = np.asarray([label for label in sorted(kept) for _ in kept[label]], np.int32)
    images = np.stack([image for label in sorted(kept) for image in kept[label]])
    picks = _round_robin_by_label(labels, count)
    return images[picks], labels[picks]


def _round_robin_by_label(labels, count):
    """Indices: the first example of each label (in label order), then the second
    of each, ... at most ``count``."""
    by_label = {}
    for index, label in enumerate(np.asarray(labels).tolist()):
        by_label.setdefault(int(label), []).append(index)
    picks, rank = [], 0
    while len(picks) < count and any(rank < len(v) for v in by_label.values()):
        for label in sorted(by_label):
            if rank < len(by_label[label]) and len(picks) < count:
                picks.append(by_label[label][rank])
        rank += 1
    return np.asarray(picks, np.int64)
