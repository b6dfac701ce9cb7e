import os
import sys

import pytest

import keras

# app_helpers.py sits next to this file.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _clear_session():
    yield
    keras.backend.clear_session()
