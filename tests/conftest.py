"""Shared fixtures: tiny configs so the suite runs in minutes on 2 CPU cores."""

import importlib.util
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
