"""What the training loop's per-chunk guards cost, side by side in one run.

    python benchmarks/guard_overhead.py [--config=rect] [--chunks=10] [--repeats=5]

Both loops run the same compiled chunk of epochs and fetch its metrics (which logging
needs anyway). The guarded loop also does what train() adds per chunk: the non-finite
check on the losses and on every parameter, and the stop-signal check. (The workdir lock
and signal handlers are set up once per run and cost nothing per epoch.) Loops alternate,
so machine noise hits both; reported: median seconds per epoch of each and their ratio.
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

_CONFIG = flags.DEFINE_enum("config", "rect", available(),
                            "Config to measure (its full train set).")
_CHUNKS = flags.DEFINE_integer("chunks", 10, "Chunks per timed loop.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed loops of each kind (median reported).")


def timed_loop(trainer, states, num_epochs: int, chunks: int, guarded: bool,
               stop: training.StopSignals) -> tuple[float, training.TrainState]:
    """Seconds per epoch over ``chunks`` chunks, and the final states."""
    t0 = time.perf_counter()
    for _ in range(chunks):
        states, metrics = trainer.run(states, num_epochs)
        metrics = jax.device_get(metrics)
        if guarded:
            assert training.first_nonfinite_epoch(metrics, states.params) is None
            assert not stop.requested
    jax.block_until_ready(states)
    return (time.perf_counter() - t0) / (chunks * num_epochs), states


def main(argv):
    del argv
    config = load_config(_CONFIG.value)
    trainer = training.build_trainer(config)
    states = trainer.fresh_states()
    num_epochs = training.chunk_epochs(config)
    times = {True: [], False: []}
    with training.StopSignals() as stop:
        states = timed_loop(trainer, states, num_epochs, 1, True, stop)[1]  # compile
        for _ in range(_REPEATS.value):
            for guarded in (False, True):
                seconds, states = timed_loop(trainer, states, num_epochs,
                                             _CHUNKS.value, guarded, stop)
                times[guarded].append(seconds)
    plain, guarded = (float(np.median(times[g])) for g in (False, True))
    print(f"config {_CONFIG.value}: chunks of {num_epochs} epochs, {_CHUNKS.value} chunks "
          f"x {_REPEATS.value} repeats per loop")
    print(f"without guards: {plain:.4f} s/epoch")
    print(f"with guards:    {guarded:.4f} s/epoch")
    print(f"ratio guarded / plain: {guarded / plain:.3f}")


if __name__ == "__main__":
    app.run(main)
