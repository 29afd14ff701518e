"""What the training loop's per-chunk guards, or restarts that never fire, cost.

    python benchmarks/loop_overhead.py --compare=guards --config=rect --epochs=50 --chunks=3
    python benchmarks/loop_overhead.py --compare=restarts --config=rect_best --epochs=10 --chunks=2

Two loops run the same config's compiled chunks of epochs and fetch their metrics (which
logging needs anyway); they differ in one thing:
- ``guards``: one trainer; the second loop also does what train() adds per chunk: the
  non-finite check on the losses and on every parameter, and the stop-signal check (the
  workdir lock and signal handlers are set up once per run and cost nothing per epoch).
- ``restarts``: two trainers, both with a validation split, with ``restart_above`` 0
  (off) and a threshold no run reaches (on, never firing: every epoch still draws a fresh
  initialisation inside the compiled chunk in case a replica is stuck).
The loops alternate, so machine noise hits both; reported: the median seconds per epoch
of each and their ratio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import available  # noqa: E402
from configs import load as load_config  # noqa: E402
from vaeshapes import training  # noqa: E402

_COMPARE = flags.DEFINE_enum("compare", "guards", ["guards", "restarts"], "What to measure.")
_CONFIG = flags.DEFINE_enum("config", "rect", available(),
                            "Config to measure (its full train set).")
_CHUNKS = flags.DEFINE_integer("chunks", 3, "Chunks per timed loop.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed loops of each kind (median reported).")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Epochs per chunk (0: as many as train.py's).")
NEVER = 1e30  # nats per image: a restart threshold no finite loss exceeds


def guard_check(stop: training.StopSignals):
    """train()'s per-chunk checks, as a function of (metrics, states)."""
    def check(metrics, states):
        assert training.first_nonfinite_epoch(metrics, states.params) is None
        assert not stop.requested
    return check


def with_restarts(name: str, restart_above: float):
    """The config ``name`` with a validation split and ``restart_above`` set."""
    config = load_config(name)
    config.data.num_val = config.data.num_val or 1000
    config.restart_above = restart_above
    return config


def loops(stop: training.StopSignals) -> dict:
    """The two loops to compare: label -> (trainer, per-chunk check or None)."""
    if _COMPARE.value == "guards":
        trainer = training.build_trainer(load_config(_CONFIG.value))
        return {"without guards": (trainer, None), "with guards": (trainer, guard_check(stop))}
    return {"restarts off": (training.build_trainer(with_restarts(_CONFIG.value, 0.0)), None),
            "restarts on, never firing": (
                training.build_trainer(with_restarts(_CONFIG.value, NEVER)), None)}


def seconds_per_epoch(trainer, states, num_epochs: int, chunks: int, check):
    """Seconds per epoch over ``chunks`` chunks (metrics fetched), and the final states."""
    t0 = time.perf_counter()
    for _ in range(chunks):
        states, metrics = trainer.run(states, num_epochs)
        metrics = jax.device_get(metrics)
        if check is not None:
            check(metrics, states)
    jax.block_until_ready(states)
    return (time.perf_counter() - t0) / (chunks * num_epochs), states


def main(argv):
    del argv
    with training.StopSignals() as stop:
        compared = loops(stop)
        num_epochs = _EPOCHS.value or training.chunk_epochs(
            next(iter(compared.values()))[0].config)
        states = {label: seconds_per_epoch(t, t.fresh_states(), num_epochs, 1, c)[1]
                  for label, (t, c) in compared.items()}  # compile
        times = {label: [] for label in compared}
        for _ in range(_REPEATS.value):
            for label, (trainer, check) in compared.items():
                seconds, states[label] = seconds_per_epoch(trainer, states[label], num_epochs,
                                                           _CHUNKS.value, check)
                times[label].append(seconds)
    if _COMPARE.value == "restarts":
        restarts = jax.device_get(states["restarts on, never firing"].restarts)
        assert int(np.max(restarts)) == 0, "a restart fired"
    (first, a), (second, b) = ((label, float(np.median(t))) for label, t in times.items())
    print(f"config {_CONFIG.value}: chunks of {num_epochs} epochs, {_CHUNKS.value} chunks "
          f"x {_REPEATS.value} repeats per loop")
    width = max(map(len, times)) + 1
    print(f"{first + ':':<{width}} {a:.4f} s/epoch")
    print(f"{second + ':':<{width}} {b:.4f} s/epoch")
    print(f"ratio {second} / {first}: {b / a:.3f}")


if __name__ == "__main__":
    app.run(main)
