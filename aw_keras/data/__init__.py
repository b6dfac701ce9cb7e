"""Input pipelines on tf.data and training presets.

Example:

>>> from aw_keras import data
>>> source = data.get_source("fashion_mnist")          # offline, real data
>>> preset = data.get_preset("small")
>>> train, steps = data.train_dataset(source, preset, batch_size=128, seed=0,
...                                   start_epoch=0, end_epoch=10)
>>> val = data.eval_dataset(source, "validation", preset, batch_size=256)
"""

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
