"""What ``config.restart_above`` costs when it never fires, side by side in one run.

    python benchmarks/restart_overhead.py --config=rect_best --epochs=10 --chunks=2 --repeats=5

With restarts on, every epoch draws a fresh initialisation inside the compiled chunk and
keeps it only where a replica is stuck on a check epoch. Two trainers of the same config,
both with a validation split, differ only in ``restart_above``: 0 (off) against a
threshold no run reaches (on, never firing). Their chunks alternate, so machine noise hits
both; reported: median seconds per epoch of each and their ratio.
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

_CONFIG = flags.DEFINE_enum("config", "rect_best", available(),
                            "Config to measure (its full train set).")
_CHUNKS = flags.DEFINE_integer("chunks", 2, "Chunks per timed loop.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed loops of each kind (median reported).")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Epochs per chunk (0: as many as train.py's).")
NEVER = 1e30  # nats per image: a restart threshold no finite loss exceeds


def configured(name: str, restart_above: float):
    """The config ``name`` with a validation split and ``restart_above`` set."""
    config = load_config(name)
    config.data.num_val = config.data.num_val or 1000
    config.restart_above = restart_above
    return config


def seconds_per_epoch(trainer, states, num_epochs: int, chunks: int):
    """Seconds per epoch over ``chunks`` chunks (metrics fetched), and the final states."""
    t0 = time.perf_counter()
    for _ in range(chunks):
        states, metrics = trainer.run(states, num_epochs)
        jax.device_get(metrics)
    jax.block_until_ready(states)
    return (time.perf_counter() - t0) / (chunks * num_epochs), states


def main(argv):
    del argv
    trainers = {on: training.build_trainer(configured(_CONFIG.value, NEVER if on else 0.0))
                for on in (False, True)}
    num_epochs = _EPOCHS.value or training.chunk_epochs(trainers[False].config)
    states = {on: seconds_per_epoch(t, t.fresh_states(), num_epochs, 1)[1]  # compile
              for on, t in trainers.items()}
    times = {False: [], True: []}
    for _ in range(_REPEATS.value):
        for on, trainer in trainers.items():
            seconds, states[on] = seconds_per_epoch(trainer, states[on], num_epochs,
                                                    _CHUNKS.value)
            times[on].append(seconds)
    assert int(np.max(jax.device_get(states[True].restarts))) == 0, "a restart fired"
    off, on = (float(np.median(times[k])) for k in (False, True))
    print(f"config {_CONFIG.value}: chunks of {num_epochs} epochs, {_CHUNKS.value} chunks "
          f"x {_REPEATS.value} repeats per loop")
    print(f"restarts off:             {off:.4f} s/epoch")
    print(f"restarts on, never firing: {on:.4f} s/epoch")
    print(f"ratio on / off: {on / off:.3f}")


if __name__ == "__main__":
    app.run(main)
