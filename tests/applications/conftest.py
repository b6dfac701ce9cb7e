import os
import sys

import pytest

import keras

# app_helpers.py sits next to this file.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """`weights="imagenet"` downloads missing files with keras.utils.get_file; the
    tests never touch the network: every download fails as without network.
    Tests that check the download monkeypatch get_file themselves."""

    def offline(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary "
                        "failure in name resolution (tests never download)")

    monkeypatch.setattr(keras.utils, "get_file", offline)


@pytest.fixture(autouse=True)
def _clear_session():
    yield
    keras.backend.clear_session()
