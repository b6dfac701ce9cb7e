"""Helpers shared by the application tests."""

import numpy as np

import keras


def small_kwargs(name):
    """Cheapest valid arguments for a registered model name."""
    if "cifar" in name:
        return dict(input_shape=(28, 28, 1), classes=4)
    if "mobilenet" in name:
        return dict(input_shape=(32, 32, 3), alpha=0.25, classes=4)
    return dict(input_shape=(32, 32, 3), classes=4)


def fit_one_step(model, x, classes):
    """One SGD step; returns (loss, whether any trainable weight changed)."""
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    y = np.arange(len(x)) % classes
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    changed = any(
        not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)
    )
    return history.history["loss"][0], changed


def randomize_like_trained(model, calibration, seed=0):
    """Random BN affine parameters and biases (kernels keep their init), then BN
    moving statistics set to those of ``calibration`` (one training-mode pass with
    momentum 0), as in a trained model: outputs vary with the input instead of
    saturating or vanishing. Returns ``model``."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        kind = weight.path.split("/")[-1]
        if kind == "gamma":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(weight.dtype))
        elif kind in ("beta", "bias"):
            weight.assign(rng.normal(0.0, 0.2, weight.shape).astype(weight.dtype))
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(calibration, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    return model


def gate_variables(layer):
    """The variables of a new attention block that receive a gradient at initialisation
    for any input (the zeroed last layer's kernel too unless its ReLU input is all 0)."""
    from aw_keras.layers import AWConv2D
    from aw_keras.layers import SqueezeExcite

    if isinstance(layer, AWConv2D):
        return [layer.excite_bn.gamma, layer.excite_bn.beta]
    if isinstance(layer, SqueezeExcite):
        return [layer.expand.bias]
    found = [layer.mlp_expand.bias]  # CBAM
    if layer.use_spatial:
        found += [layer.spatial_bn.gamma, layer.spatial_bn.beta]
    return found
