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
    """`weights` must be None, "imagenet" or an existing weights file; returns it.

    "imagenet" and paths named like a keras.applications ImageNet file are
    converted from the plain keras.applications model by `finish_model`
    (see `aw_keras.applications.imagenet_weights`)."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "`weights` must be None, 'imagenet' or a path to a weights file, got "
            f"{weights!r} of type {type(weights).__name__}."
        )
    path = os.fspath(weights)
    if path == "imagenet":
        return path
    if not os.path.isfile(path):
        raise ValueError(
            f"`weights` must be None, 'imagenet' or the path to an existing weights file; "
            f"{path!r} does not exist."
        )
    return path


def imagenet_source(weights, architecture, **model_args):
    """For `weights` "imagenet" or a keras.applications ImageNet file: the checked
    `ImageNetSource` (its file found or downloaded), else None. Call before
    building so a missing file fails fast."""
    from aw_keras.applications import imagenet_weights

    if weights != "imagenet" and not imagenet_weights.is_imagenet_file(weights):
        return None
    if architecture is None:
        raise ValueError(
            "`weights='imagenet'` (keras.applications ImageNet weights) exists only for "
            "ResNet50/101/152 and MobileNet and their SE / CBAM / AW variants; pass "
            "`weights=None` or the path to a weights file of this model."
        )
    path = None if weights == "imagenet" else weights
    source = imagenet_weights.ImageNetSource(architecture, path=path, **model_args)
    source.resolve_path()
    return source


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


def finish_model(inputs, outputs, name, weights, imagenet=None):
    """The model; loads `weights`, or converts the plain ImageNet model `imagenet`
    (an `ImageNetSource`) into it (`aw_keras.applications.pretrained.transplant`)."""
    model = keras.Model(inputs, outputs, name=name)
    if imagenet is not None:
        from aw_keras.applications import pretrained

        pretrained.transplant(imagenet.build_plain(), model)
    elif weights is not None:
        model.load_weights(weights)
    return model
