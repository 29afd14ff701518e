"""The configs: ``python train.py --config=configs/<name>.py``; ``load(name)`` for scripts."""

import importlib
from pathlib import Path


def available() -> list[str]:
    """Names of the configs in this folder."""
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if p.stem != "__init__")


def load(name: str):
    """get_config() of configs/<name>.py (the repository root must be on sys.path)."""
    if name not in available():
        raise ValueError(f"no config {name!r}; configs: {', '.join(available())}")
    return importlib.import_module(f"configs.{name}").get_config()
