"""Training speed against the hardware, side by side in one run.

    python benchmarks/train_speed.py [--configs=rect,shapes] [--seeds=1,8] [--repeats=5]
        [--impls=] [--cpu_layouts=split] [--max_batches=0]
        [--json=benchmarks/train_speed.json]

For each config, conv_impl (default: the config's own), CPU layout and seed count:
compile time (lowering + XLA compile of the chunk), median seconds per epoch over
``--repeats`` compiled calls, samples/s (all seeds), the analytic FLOPs per sample (3 x
``models.forward_flops``: forward and backward) and the achieved GFLOP/s as a fraction
of a large f32 matmul's GFLOP/s measured in the same run. Each call trains
``--epochs_per_call`` epochs in one compiled chunk, exactly as train.py does.
``--max_batches`` > 0 trains on that many batches per epoch instead of the config's
full train set and scales the time up to a full epoch (for configs whose epoch is
long). The projected run = seconds per epoch x num_epochs.

Each row runs in its own process, because the CPU layout is fixed when JAX starts:
``split`` does what train.py does (``parallel.split_cpu_cores``: replicas that divide
over the cores train one core each), ``data`` does what ``train.py --split_cpu_batch``
does (the cores the replicas leave idle take a share of every batch), ``one`` keeps one
CPU device using every core.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import available  # noqa: E402
from configs import load as load_config  # noqa: E402
from vaeshapes import models, parallel, training  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["rect", "shapes"], "Configs to measure.")
flags.register_validator("configs", lambda v: set(v) <= set(available()),
                         f"--configs takes {', '.join(available())}")
_IMPLS = flags.DEFINE_list("impls", [], "conv_impl values to compare (empty: the config's).")
_LAYOUTS = flags.DEFINE_list("cpu_layouts", ["split"],
                             "split: as train.py (parallel.split_cpu_cores); data: as "
                             "train.py --split_cpu_batch; one: one device.")
flags.register_validator("cpu_layouts", lambda v: set(v) <= {"split", "data", "one"},
                         "--cpu_layouts takes split, data and/or one")
_ROW = flags.DEFINE_string("row", "", "Internal: measure one row (config,impl,layout,seeds).")
_SEEDS = flags.DEFINE_list("seeds", ["1", "8"], "num_seeds values to compare.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per row (median reported).")
_EPOCHS = flags.DEFINE_integer("epochs_per_call", 1, "Epochs per compiled call.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0,
                                    "Batches per timed epoch (0: the config's train set).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "n of the n x n x n peak matmul.")
_JSON = flags.DEFINE_string("json", "benchmarks/train_speed.json", "Where to write rows.")


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_gflops(n: int, repeats: int) -> float:
    """GFLOP/s of an n x n x n float32 matmul (the achievable peak of dense work)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    return 2 * n**3 / median_seconds(lambda: matmul(a), repeats) / 1e9


def row_config(name: str, impl: str, num_seeds: int):
    """The config ``name`` with ``num_seeds``, ``impl`` ("" keeps its own) and no val."""
    config = load_config(name)
    config.model.conv_impl = impl or config.model.conv_impl
    config.num_seeds = num_seeds
    config.data.num_val = 0
    return config


def measure(config) -> dict:
    """One row, in this process (its CPU layout already set)."""
    num_seeds = config.num_seeds
    full_batches = config.data.num_train // config.batch_size
    if _MAX_BATCHES.value:
        config.data.num_train = config.batch_size * min(_MAX_BATCHES.value, full_batches)
    batches = config.data.num_train // config.batch_size
    trainer = training.build_trainer(config)
    states = trainer.fresh_states()
    epochs = _EPOCHS.value

    t0 = time.perf_counter()
    trainer.chunk.lower(states, trainer.betas, trainer.splits["train"],
                        trainer.splits.get("val"), epochs).compile()
    compile_s = time.perf_counter() - t0
    states, metrics = trainer.run(states, epochs)  # warm-up, not timed
    jax.block_until_ready(metrics)

    def call():
        nonlocal states
        states, metrics = trainer.run(states, epochs)
        return metrics

    per_call = median_seconds(call, _REPEATS.value)
    epoch_s = per_call / epochs * full_batches / batches
    samples = num_seeds * full_batches * config.batch_size
    flops_per_sample = 3 * models.forward_flops(config)
    return dict(conv_impl=config.model.conv_impl, num_seeds=num_seeds,
                cpu_devices=jax.device_count(), compile_s=compile_s, epoch_s=epoch_s,
                run_s=epoch_s * config.num_epochs, num_epochs=config.num_epochs,
                samples_per_s=samples / epoch_s, flops_per_sample=flops_per_sample,
                gflops=samples * flops_per_sample / epoch_s / 1e9,
                timed_batches_per_epoch=batches, full_batches_per_epoch=full_batches)


def measure_row(row: str) -> None:
    """Child process: sets the CPU layout, measures, prints the row as JSON."""
    name, impl, layout, seeds = row.split(",")
    config = row_config(name, impl, int(seeds))
    if layout in ("split", "data"):
        parallel.split_cpu_cores(training.num_replicas(config), config.batch_size,
                                 split_batch=layout == "data")
    print(json.dumps(dict(measure(config), config=name)))


def run_row(name: str, impl: str, layout: str, seeds: int) -> dict:
    """Measures one row in a fresh process (so its CPU layout can differ)."""
    argv = [sys.executable, __file__, f"--row={name},{impl},{layout},{seeds}",
            f"--repeats={_REPEATS.value}", f"--epochs_per_call={_EPOCHS.value}",
            f"--max_batches={_MAX_BATCHES.value}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"row {name},{impl},{layout},{seeds} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), cpu_layout=layout)


def main(argv):
    del argv
    if _ROW.value:
        return measure_row(_ROW.value)
    peak = matmul_gflops(_MATMUL.value, _REPEATS.value)
    print(f"matmul peak ({_MATMUL.value}^3 float32): {peak:.0f} GFLOP/s on "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
    print(f"{'config':7} {'impl':8} {'layout':6} {'seeds':>5} {'devices':>7} "
          f"{'compile s':>9} {'s/epoch':>8} {'run s':>8} {'samples/s':>10} "
          f"{'MFLOP/smp':>9} {'GFLOP/s':>8} {'of peak':>7} {'vs 1 seed':>9}")
    rows = []
    for name in _CONFIGS.value:
        for impl in _IMPLS.value or [""]:
            for layout in _LAYOUTS.value:
                base = None
                for seeds in map(int, _SEEDS.value):
                    row = run_row(name, impl, layout, seeds)
                    base = base or row
                    row["peak_fraction"] = row["gflops"] / peak
                    row["time_vs_first_seed_count"] = row["epoch_s"] / base["epoch_s"]
                    rows.append(row)
                    print(f"{name:7} {row['conv_impl']:8} {layout:6} {seeds:>5} "
                          f"{row['cpu_devices']:>7} {row['compile_s']:>9.1f} "
                          f"{row['epoch_s']:>8.3f} {row['run_s']:>8.1f} "
                          f"{row['samples_per_s']:>10.0f} "
                          f"{row['flops_per_sample'] / 1e6:>9.2f} {row['gflops']:>8.1f} "
                          f"{row['peak_fraction']:>7.1%} "
                          f"{row['time_vs_first_seed_count']:>9.2f}", flush=True)
    out = dict(machine=dict(platform=platform.platform(), processor=platform.processor(),
                            devices=[str(d) for d in jax.devices()], jax=jax.__version__,
                            matmul_peak_gflops=peak), rows=rows)
    Path(_JSON.value).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)
