"""tf.data input pipelines: parallel decode, augmentation, batching, prefetch.

The training stream is a pure function of (seed, epoch, position): every epoch
shuffles with its own seed and augmentation draws stateless random numbers from
the example's global position. Resuming at epoch ``e``, step ``s`` therefore
feeds exactly the batches an uninterrupted run would have fed.
"""

import numpy as np
import tensorflow as tf

from aw_keras.data.sources import DataError

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


def _normalize(image, mean, std):
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


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


def _train_transform(preset, shape, mean, std, seed):
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
        image = tf.ensure_shape(_normalize(image, mean, std), (height, width, channels))
        return image, label

    return transform


def _eval_transform(preset, shape, mean, std):
    height, width, channels = shape

    def transform(image, label):
        if preset.eval_resize:
            image = _resize_center_crop(image, preset.eval_resize, (height, width))
        elif tuple(image.shape[:2]) != (height, width):
            image = _resize_to(image, (height, width))
        image = tf.ensure_shape(_normalize(image, mean, std), (height, width, channels))
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
    batches of ``start_epoch`` (a mid-epoch resume). Returns (dataset, steps)."""
    split = source.split("train").take(num_examples)
    steps = steps_per_epoch(split.num_examples, batch_size)
    per_epoch = steps * batch_size
    loader = _Loader(source, split)
    shape = image_shape(source, preset)
    mean, std = normalization(source, preset)
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
    transform = _train_transform(preset, shape, mean, std, seed)
    ds = stream.map(lambda position, element: transform(position, *loader(element)),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.with_options(_options()), steps


def eval_dataset(source, split_name, preset, batch_size, num_examples=None):
    """The split in order, batched (last batch partial), no augmentation."""
    split = source.split(split_name).take(num_examples)
    loader = _Loader(source, split)
    transform = _eval_transform(preset, image_shape(source, preset),
                                *normalization(source, preset))
    ds = loader.base().map(lambda *element: transform(*loader(_single(element))),
                           num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(_options())


def sample_images(source, split_name, preset, count):
    """``count`` normalized images and labels of a split, as NumPy arrays."""
    ds = eval_dataset(source, split_name, preset, count, num_examples=count)
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()
