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

from aw_keras.data.coco import CocoImage
from aw_keras.data.coco import CocoSplit
from aw_keras.data.coco import detection_dataset
from aw_keras.data.coco import find_coco_splits
from aw_keras.data.coco import load_coco
from aw_keras.data.fashion_detection import fashion_detection_dir
from aw_keras.data.fashion_detection import write_fashion_detection
from aw_keras.data.pipeline import eval_dataset
from aw_keras.data.pipeline import image_shape
from aw_keras.data.pipeline import normalization
from aw_keras.data.pipeline import sample_images
from aw_keras.data.pipeline import train_dataset
from aw_keras.data.presets import PRESETS
from aw_keras.data.presets import Preset
from aw_keras.data.presets import get_preset
from aw_keras.data.sources import HOW_TO_GET_DATA
from aw_keras.data.sources import DataError
from aw_keras.data.sources import Source
from aw_keras.data.sources import Split
from aw_keras.data.sources import find_fashion_mnist
from aw_keras.data.sources import get_source
from aw_keras.data.sources import load_fashion_mnist
from aw_keras.data.sources import load_image_folder
from aw_keras.data.sources import load_tfds
