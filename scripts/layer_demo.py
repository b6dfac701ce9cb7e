"""Interim main job: AWConv2D on a batch of real Fashion-MNIST images.

Checks that every implementation gives the same output and prints the attention
statistics. Replaced by the full train/compare/export demo (issue 5).
"""

import gzip
import os

import numpy as np

import aw_keras
from aw_keras.layers import AWConv2D
from aw_keras.layers.aw_conv2d import IMPLEMENTATIONS

path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
if os.path.exists(path):
    with gzip.open(path) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:32]
    images = images.astype("float32") / 255.0
    print(f"Fashion-MNIST: {len(images)} test images from {path}")
else:
    images = np.random.default_rng(0).random((32, 28, 28, 1), dtype="float32")
    print("Fashion-MNIST not found (apt-get install dataset-fashion-mnist); using noise")

layer = AWConv2D(16, 3, padding="same")
outputs = {}
for implementation in IMPLEMENTATIONS:
    layer.implementation = implementation
    outputs[implementation] = np.asarray(layer(images))
print(f"aw_keras {aw_keras.__version__}: AWConv2D(16, 3) output {outputs['auto'].shape}")
print("| implementation | max abs difference to taps |")
print("|---|---|")
for implementation, out in outputs.items():
    print(f"| {implementation} | {np.abs(out - outputs['taps']).max():.2e} |")
maps = np.asarray(layer.attention_maps(images))
print(f"attention maps {maps.shape} (N, kh, kw, C1, C2): mean {maps.mean():.3f}, "
      f"std over samples {maps.std(axis=0).mean():.4f}")
