import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_helpers import write_folder  # noqa: E402


@pytest.fixture
def tiny_folder(tmp_path):
    return write_folder(str(tmp_path / "data"))
