"""Shared pytest fixtures for barista's end-to-end tests.

Tests drive the real binary (BARISTA_BIN, default build/barista) on the real
fetched models (BARISTA_MODELS, default models/)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def barista_bin():
    path = pathlib.Path(os.environ.get("BARISTA_BIN", ROOT / "build" / "barista"))
    if not path.exists():
        pytest.fail(f"barista binary not found at {path}; build first")
    return str(path)


@pytest.fixture(scope="session")
def models_dir():
    d = pathlib.Path(os.environ.get("BARISTA_MODELS", ROOT / "models"))
    if not (d / "SmolLM2-135M-Instruct.Q4_1.gguf").exists():
        pytest.fail(f"models not fetched into {d}; run scripts/fetch-models")
    return d


@pytest.fixture(scope="session")
def gguf_path(models_dir):
    return str(models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def safetensors_path(models_dir):
    return str(models_dir / "all-MiniLM-L6-v2" / "model.safetensors")


@pytest.fixture(scope="session")
def sanitized():
    return os.environ.get("BARISTA_SANITIZED") == "1"
