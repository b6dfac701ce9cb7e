import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `tests/reference.py` is imported as a plain module by the layer tests.
sys.path.insert(0, os.path.dirname(__file__))
