"""Shared fixtures (tiny configs) and how the suite runs on 2 CPU cores in minutes: XLA
flags and one compilation cache for every test process, slowest test files first."""

import os
import shutil
import tempfile
from pathlib import Path

# The tests compile far more than they run: XLA's backend (LLVM) optimisation level 0
# halves the compile time of a training chunk (shapes: 10.9 s -> 5.5 s; a tiny shapes
# train 26 s -> 18 s). Set before JAX starts, and inherited by the subprocesses.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from configs import load as load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# JAX's persistent compilation cache, shared by this test run's processes (both xdist
# workers, and the train.py / eval.py subprocesses through the environment): a program
# that several tests compile (the same tiny config, a second evaluate) compiles once.
# The process that creates it (pytest itself, not an xdist worker, which inherits it
# through the environment) removes it at the end.
_OWN_CACHE = not os.environ.get("JAX_COMPILATION_CACHE_DIR")  # unset, or empty (not cwd)
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vaeshapes-test-jax-cache-")
CACHE_DIR = Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
# Every program, however quick to compile: a tiny config's eager ops (hundreds of 30-60 ms
# compiles per process) otherwise recompile in every process; a cached train.py subprocess
# takes 7 s with them cached against 15 s with only those over 0.1 s.
_MIN_COMPILE_SECS = 0
os.environ.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(_MIN_COMPILE_SECS),
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
# (the environment reaches subprocesses; this process may have imported JAX already)
jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECS)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# Test files from the most CPU time to the least (each measured alone, 2 cores), the
# order in which the xdist workers take them: a long file started last would run while
# the other worker idles. (xdist's default puts files with many tests first instead.)
SLOWEST_FIRST = ("test_parallel.py", "test_training.py", "test_prior.py",
                 "test_interruption.py", "test_cli_shapes.py", "test_sweep.py", "test_cli.py",
                 "test_selection.py", "test_layers.py", "test_elbo.py", "test_analysis.py",
                 "test_models.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's --dist loadfile
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    """Slowest files first (SLOWEST_FIRST; others after them), tests within a file kept in
    their order."""
    def rank(item):
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
    items.sort(key=rank)


def pytest_sessionfinish(session):
    """Removes the compilation cache this process created."""
    if _OWN_CACHE:
        shutil.rmtree(CACHE_DIR, ignore_errors=True)


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
