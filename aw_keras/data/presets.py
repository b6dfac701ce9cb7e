"""Training recipes: the paper's ImageNet recipe and a small-image recipe.

``imagenet`` (Zhu et al. 2021, Sec. 4.1, the standard torchvision ImageNet recipe):
SGD momentum 0.9, lr 0.1 per 256 images (scaled linearly with the batch size),
weight decay 1e-4 as coupled L2 (PyTorch's ``weight_decay``), step decay x0.1
every 30 epochs, 90 epochs (the paper also reports 100), random-resized-crop 224 +
horizontal flip; evaluation resizes the shorter side to 256 and center-crops 224.

``small`` (28x28-32x32 data such as Fashion-MNIST or CIFAR): SGD momentum 0.9
(Nesterov), lr 0.05 per 128 images, coupled L2 5e-4, linear warm-up for one epoch
then cosine decay to 0, label smoothing 0.1, pad-and-crop + flip; evaluation uses
the images as they are. See docs/training.md for why (seed stability).
``small_noflip``: ``small`` without the flip, for digits and other data whose
classes change when mirrored.

Both set every BatchNormalization momentum to 0.9 (``bn_momentum``), the Keras
equivalent of PyTorch's default 0.1 that the paper trained with; docs/training.md
says why Keras's default 0.99 is not used.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    epochs: int
    base_learning_rate: float   # per `base_batch_size` images
    base_batch_size: int
    momentum: float
    nesterov: bool
    weight_decay: float         # coupled L2 (added to the gradient), as in PyTorch
    schedule: str               # "step" | "cosine"
    step_epochs: int = 30
    step_factor: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    train_augment: str = "pad_crop_flip"   # | "random_resized_crop" | "none"
    crop_padding: int = 0
    flip: bool = True
    image_size: int = None      # None: the data's own size
    eval_resize: int = None     # shorter side before the center crop (imagenet)
    bn_momentum: float = 0.9    # PyTorch's BN momentum 0.1
    mean: tuple = (0.5,)        # used when the dataset brings no statistics
    std: tuple = (0.5,)

    def learning_rate(self, batch_size):
        """The linear-scaling rule: base lr * batch / base batch."""
        return self.base_learning_rate * batch_size / self.base_batch_size

    def to_dict(self):
        return dataclasses.asdict(self)


PRESETS = {
    "imagenet": Preset(
        name="imagenet", epochs=90, base_learning_rate=0.1, base_batch_size=256,
        momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="step",
        step_epochs=30, step_factor=0.1, train_augment="random_resized_crop",
        flip=True, image_size=224, eval_resize=256,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    ),
    "small": Preset(
        name="small", epochs=15, base_learning_rate=0.05, base_batch_size=128,
        momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine",
        warmup_epochs=1.0, label_smoothing=0.1, train_augment="pad_crop_flip",
        crop_padding=2, flip=True,
    ),
}
# The small recipe without the horizontal flip, for data whose classes mirroring
# changes (digits, letters).
PRESETS["small_noflip"] = dataclasses.replace(PRESETS["small"], name="small_noflip", flip=False)


def get_preset(name):
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]
