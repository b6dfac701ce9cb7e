"""Input pipelines on tf.data and training presets.

Example:

>>> from aw_keras import data
>>> source = data.get_source("fashion_mnist")          # offline, real data
>>> preset = data.get_preset("small")
>>> train, steps = data.train_dataset(source, preset, batch_size=128, seed=0,
...                                   start_epoch=0, end_epoch=10)
>>> val = data.eval_dataset(source, "validation", preset, batch_size=256)

Detection data (COCO layout, see `aw_keras.data.coco`):

>>> directory = data.fashion_detection_dir(seed=0)     # offline synthetic set, cached
>>> train_split, val_split = data.find_coco_splits(directory)
>>> train = data.load_coco(directory, train_split)
>>> train_ds = data.detection_dataset(train, image_size=128, batch_size=16, training=True)
"""

from aw_keras.utils.optional import require_tensorflow

require_tensorflow("aw_keras.data (its input pipelines are tf.data)")

from aw_keras.data.coco import CocoImage  # noqa: E402
from aw_keras.data.coco import CocoSplit  # noqa: E402
from aw_keras.data.coco import detection_dataset  # noqa: E402
from aw_keras.data.coco import find_coco_splits  # noqa: E402
from aw_keras.data.coco import load_coco  # noqa: E402
from aw_keras.data.fashion_detection import fashion_detection_dir  # noqa: E402
from aw_keras.data.fashion_detection import write_fashion_detection  # noqa: E402
from aw_keras.data.pipeline import eval_dataset  # noqa: E402
from aw_keras.data.pipeline import image_shape  # noqa: E402
from aw_keras.data.pipeline import normalization  # noqa: E402
from aw_keras.data.pipeline import sample_images  # noqa: E402
from aw_keras.data.pipeline import train_dataset  # noqa: E402
from aw_keras.data.presets import PRESETS  # noqa: E402
from aw_keras.data.presets import Preset  # noqa: E402
from aw_keras.data.presets import get_preset  # noqa: E402
from aw_keras.data.sources import HOW_TO_GET_DATA  # noqa: E402
from aw_keras.data.sources import DataError  # noqa: E402
from aw_keras.data.sources import Source  # noqa: E402
from aw_keras.data.sources import Split  # noqa: E402
from aw_keras.data.sources import find_fashion_mnist  # noqa: E402
from aw_keras.data.sources import get_source  # noqa: E402
from aw_keras.data.sources import load_fashion_mnist  # noqa: E402
from aw_keras.data.sources import load_image_folder  # noqa: E402
from aw_keras.data.sources import load_tfds  # noqa: E402
