"""Argument validation and plumbing shared by the model builders.

Mirrors the keras.applications conventions (`obtain_input_shape`, input_tensor
handling, `weights` loading) with public Keras APIs only and clear messages.
"""

import os

import keras


def require_channels_last():
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "aw_keras.applications builds channels_last models only; "
            f"keras.config.image_data_format() is {keras.config.image_data_format()!r}. "
            "Call keras.config.set_image_data_format('channels_last') first."
        )


def validate_weights(weights):
    """`weights` must be None or an existing weights file; returns it."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "`weights` must be None or a path to a weights file, got "
            f"{weights!r} of type {type(weights).__name__}."
        )
    path = os.fspath(weights)
    if path == "imagenet":
        raise ValueError(
            "`weights='imagenet'` is not available: aw_keras ships no pretrained "
            "weights. Pass `weights=None` (random initialization) or the path to a "
            "weights file saved with `model.save_weights(...)`."
        )
    if not os.path.isfile(path):
        raise ValueError(
            f"`weights` must be None or the path to an existing weights file; {path!r} "
            "does not exist."
        )
    return path


def validate_pooling(pooling):
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', got {pooling!r}.")
    return pooling


def validate_classes(classes):
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"`classes` must be a positive int, got {classes!r}.")
    return classes


def obtain_input_shape(input_shape, input_tensor, default_size, min_size, include_top):
    """Returns a validated (height, width, channels) input shape.

    Spatial sizes may be None (any size at call time); known sizes must be at
    least ``min_size``. Any channel count >= 1 works.
    """
    if input_shape is None and input_tensor is not None:
        tensor_shape = tuple(input_tensor.shape)
        if len(tensor_shape) != 4:
            raise ValueError(
                "`input_tensor` must be a 4-D (batch, height, width, channels) tensor, "
                f"got shape {tensor_shape}."
            )
        input_shape = tensor_shape[1:]
    if input_shape is None:
        input_shape = (default_size, default_size, 3) if include_top else (None, None, 3)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            "`input_shape` must be a tuple (height, width, channels), got "
            f"{input_shape!r}."
        ) from None
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must have 3 entries (height, width, channels), got "
            f"{input_shape}."
        )
    height, width, channels = input_shape
    if channels is None or channels < 1:
        raise ValueError(
            f"The channel count of `input_shape` must be a positive int, got {input_shape}."
        )
    for label, size in (("height", height), ("width", width)):
        if size is not None and size < min_size:
            raise ValueError(
                f"Input {label} must be at least {min_size} for this model, got "
                f"input_shape={input_shape}."
            )
    return input_shape


def make_input(input_tensor, input_shape):
    """Returns (model input(s), first tensor of the graph)."""
    if input_tensor is None:
        image = keras.Input(shape=input_shape)
        return image, image
    if not keras.utils.is_keras_tensor(input_tensor):
        image = keras.Input(tensor=input_tensor, shape=input_shape)
        return image, image
    return keras.utils.get_source_inputs(input_tensor), input_tensor


def add_head(x, include_top, pooling, classes, classifier_activation):
    """keras.applications ResNet head: GAP + Dense, or optional pooling."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def finish_model(inputs, outputs, name, weights):
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
