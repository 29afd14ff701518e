"""Shared fixtures: tiny configs so the suite runs in minutes on 2 CPU cores."""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_config(name: str):
    """get_config() of configs/<name>.py."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_rect_config():
    config = load_config("rect")
    config.num_epochs = 4
    config.log_every = 1
    config.checkpoint_every = 2
    config.batch_size = 16
    config.eval_batch_size = 32
    config.data.num_train = 64
    config.data.num_test = 64
    return config


@pytest.fixture
def rect_config():
    return tiny_rect_config()


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """Lets the test subprocesses (train.py, eval.py) share JAX's persistent compilation
    cache, so each compiles a given program once per test session. Set after this process
    imported JAX, so only subprocesses use it."""
    os.environ.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
