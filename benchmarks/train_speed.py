"""Training speed, side by side in one run: conv implementations and seed counts.

    python benchmarks/train_speed.py [--configs=rect,shapes] [--seeds=1,5] [--repeats=5]
        [--json=benchmarks/train_speed.json]

For each config, conv_impl ("patches" vs flax's "xla") and number of seeds: compile
time, median seconds per epoch over repeats (one compiled epoch each), samples/s, and
the ratios against the first row of its config. Epochs use the config's batch size on
a train set of ``--batches`` batches, so a full epoch's time is seconds_per_batch x
the config's batches per epoch (reported as ``full_epoch_s``).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import load_config  # noqa: E402
from vaeshapes import data, models, rng, training  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["rect", "shapes"], "Configs to measure.")
_IMPLS = flags.DEFINE_list("impls", ["patches", "xla"], "conv_impl values to compare.")
_SEEDS = flags.DEFINE_list("seeds", ["1", "5"], "num_seeds values to compare.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed epochs per row (median reported).")
_BATCHES = flags.DEFINE_integer("batches", 8, "Batches per timed epoch.")
_JSON = flags.DEFINE_string("json", "benchmarks/train_speed.json", "Where to write rows.")


def measure(name: str, impl: str, num_seeds: int) -> dict:
    config = load_config(name)
    config.model.conv_impl = impl
    config.num_seeds = num_seeds
    full_batches = config.data.num_train // config.batch_size
    config.data.num_train = config.batch_size * _BATCHES.value
    config.data.num_val = 0
    model = models.build_model(config)
    optimizer = training.make_optimizer(config)
    states = training.init_states(config, model, optimizer)
    images = data.build_splits(config.data, rng.purpose_key(0, "data"))["train"].images
    chunk = training.make_train_chunk(config, model, optimizer)
    t0 = time.perf_counter()
    states, metrics = chunk(states, images, None, num_epochs=1)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(_REPEATS.value):
        t0 = time.perf_counter()
        states, metrics = chunk(states, images, None, num_epochs=1)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    per_batch = float(np.median(times)) / _BATCHES.value
    return dict(config=name, conv_impl=impl, num_seeds=num_seeds, compile_s=compile_s,
                ms_per_batch=1e3 * per_batch, full_epoch_s=per_batch * full_batches,
                samples_per_s=num_seeds * config.batch_size / per_batch)


def main(argv):
    del argv
    rows = []
    print(f"{'config':8} {'conv_impl':9} {'seeds':>5} {'compile s':>9} {'ms/batch':>9} "
          f"{'epoch s':>8} {'samples/s':>10} {'vs first':>8}")
    for name in _CONFIGS.value:
        first = None
        for impl in _IMPLS.value:
            for seeds in map(int, _SEEDS.value):
                row = measure(name, impl, seeds)
                first = first or row
                row["time_ratio_vs_first"] = row["ms_per_batch"] / first["ms_per_batch"]
                rows.append(row)
                print(f"{name:8} {impl:9} {seeds:>5} {row['compile_s']:>9.1f} "
                      f"{row['ms_per_batch']:>9.1f} {row['full_epoch_s']:>8.2f} "
                      f"{row['samples_per_s']:>10.0f} {row['time_ratio_vs_first']:>8.2f}",
                      flush=True)
    out = dict(machine=dict(platform=platform.platform(), processor=platform.processor(),
                            devices=[str(d) for d in jax.devices()],
                            jax=jax.__version__), rows=rows)
    Path(_JSON.value).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)
