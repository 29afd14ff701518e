"""The configs: ``python train.py --config=configs/<name>.py``; ``load(name)`` for scripts."""

import importlib


def load(name: str):
    """get_config() of configs/<name>.py (the repository root must be on sys.path)."""
    return importlib.import_module(f"configs.{name}").get_config()
