"""Export to SavedModel (TF Serving), TFLite/LiteRT and ONNX, with verification.

Installed as ``aw_keras.export``.
"""
