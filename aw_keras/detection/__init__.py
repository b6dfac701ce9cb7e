"""Object detection: RetinaNet on the FPN backbones, COCO box mAP of its predictions.

Needs the ``detection`` extra (keras-hub, pycocotools): ``pip install 'aw_keras[detection]'``.

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
from aw_keras.detection.faster_rcnn import FasterRCNN
from aw_keras.detection.retinanet import RetinaNet
