"""Export to SavedModel (TF Serving), TFLite/LiteRT and ONNX, with verification.

Installed as ``aw_keras.export``. `export_model` rewrites a model into a new
one in a target's export form (`aw_keras.export.policy`); the exporters call
it and write the artifact; `verify` runs an artifact in its runtime.

>>> from aw_keras.export import export_saved_model, export_tflite, export_onnx, verify

Detectors (a RetinaNet) go through the same functions: the SavedModel serves
decoded boxes, TFLite / ONNX hold the raw heads, which `decode_raw_outputs`
decodes (`aw_keras.export.detection`).

Class names travel as ``labels.txt`` (line i = the name of label i;
`aw_keras.export.labels`); `check_keras_archive` tells a damaged ``.keras`` file
from a missing one.
"""

from aw_keras.export.common import ExportError
from aw_keras.export.common import check_keras_archive
from aw_keras.export.detection import DetectionDecoder
from aw_keras.export.detection import decode_raw_outputs
from aw_keras.export.detection import is_detector
from aw_keras.export.detection import save_decoder_config
from aw_keras.export.labels import check_class_names
from aw_keras.export.labels import class_names_from_run
from aw_keras.export.labels import read_labels
from aw_keras.export.labels import write_labels
from aw_keras.export.layers import AWConvExport
from aw_keras.export.onnx import export_onnx
from aw_keras.export.policy import ExportPolicy
from aw_keras.export.policy import policy_for
from aw_keras.export.saved_model import ImagePreprocessing
from aw_keras.export.saved_model import export_saved_model
from aw_keras.export.tflite import count_ops
from aw_keras.export.tflite import export_tflite
from aw_keras.export.tflite import list_ops
from aw_keras.export.transform import export_model
from aw_keras.export.verify import VerificationResult
from aw_keras.export.verify import format_table
from aw_keras.export.verify import verify
from aw_keras.export.verify import verify_detection
