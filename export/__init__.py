"""Export to SavedModel (TF Serving), TFLite/LiteRT and ONNX, with verification.

Installed as ``aw_keras.export``.

>>> from aw_keras.export import export_saved_model, export_tflite, export_onnx, verify
"""

from aw_keras.export.onnx import export_onnx
from aw_keras.export.prepare import ExportError
from aw_keras.export.prepare import exportable
from aw_keras.export.saved_model import ImagePreprocessing
from aw_keras.export.saved_model import export_saved_model
from aw_keras.export.tflite import count_ops
from aw_keras.export.tflite import export_tflite
from aw_keras.export.tflite import list_ops
from aw_keras.export.verify import VerificationResult
from aw_keras.export.verify import format_table
from aw_keras.export.verify import verify
