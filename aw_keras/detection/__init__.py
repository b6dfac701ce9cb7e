"""Object detection: RetinaNet and Faster R-CNN on the FPN backbones, COCO box
mAP of their predictions.

Needs the ``detection`` extra (keras-hub, pycocotools): ``pip install 'aw_keras[detection]'``.
`RetinaNet` runs on every Keras backend; `FasterRCNN` is built on TensorFlow ops
and runs on the TensorFlow backend only (it is imported on first use, so this
package imports without TensorFlow).

Example:

>>> from aw_keras.detection import CocoEvaluator               # doctest: +SKIP
>>> evaluator = CocoEvaluator(ground_truth, category_id_of=category_ids)
>>> evaluator.update(detector.predict_on_batch(images), image_ids, scales)
>>> evaluator.result()["map"]
"""

import aw_keras.applications  # noqa: F401  (registers the FPN backbones, so detectors load)
from aw_keras.detection.evaluation import CocoEvaluator
from aw_keras.detection.evaluation import coco_metrics
from aw_keras.detection.evaluation import detections_from_predictions
from aw_keras.detection.retinanet import RetinaNet


def __getattr__(name):
    if name == "FasterRCNN":
        from aw_keras.detection.faster_rcnn import FasterRCNN

        return FasterRCNN
    raise AttributeError(f"module 'aw_keras.detection' has no attribute {name!r}")
