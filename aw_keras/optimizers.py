"""SGD with coupled L2 weight decay (PyTorch's ``SGD(weight_decay=...)``).

Keras's ``weight_decay`` is decoupled (``w -= lr * wd * w`` outside momentum);
the paper's recipe, like torchvision's, adds ``wd * w`` to the gradient before
momentum. Under momentum 0.9 the two differ by about 10x in effective strength,
so the recipe is reproduced with the coupled form. `aw-train` compiles with it,
so `import aw_keras` registers it and trained ``.keras`` files load.

Example:

>>> import aw_keras
>>> optimizer = aw_keras.optimizers.SGDL2(0.1, momentum=0.9, nesterov=True, l2=1e-4)
"""

import keras


@keras.saving.register_keras_serializable(package="aw_keras")
class SGDL2(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` plus ``l2 * variable`` added to every gradient of a
    variable with rank >= 1 (kernels, BN scales/offsets, biases: as PyTorch)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0,
                 name="sgdl2", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum,
                         nesterov=nesterov, name=name, **kwargs)
        if not isinstance(l2, (int, float)) or l2 < 0:
            raise ValueError(f"`l2` must be a non-negative number, got {l2!r}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = gradient + keras.ops.cast(self.l2, gradient.dtype) * keras.ops.cast(
                variable, gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config
