"""Data-parallel training: one run on 1 device, on 4 simulated devices, on 2 processes.

The runs must agree to float32 rounding: sharding changes only the order in which a
batch's per-image gradients are summed (partial sums per device, then an all-reduce).
Tolerance: 1e-6 absolute on parameters of size ~0.01-1 after 8 Adam steps, i.e. ~10
float32 ulps; the runs measured here differ by at most 6e-8. A real fault (a shard
drawn twice or skipped, a missing all-reduce, another data order) moves parameters by
~lr = 1e-3, which the test also checks is far above the tolerance.
"""

import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from tests.conftest import ROOT, TEST_XLA_FLAGS, tiny_rect_config
from vaeshapes import data, models, parallel, rng, training

PARAM_ATOL = 1e-6
OVERRIDES = dict(num_epochs=2, num_seeds=2, batch_size=16, checkpoint_every=2, log_every=1,
                 eval_batch_size=32,
                 **{"data.num_train": 64, "data.num_val": 40, "data.num_test": 16})


def config_for(**changes):
    config = tiny_rect_config()
    for name, value in {**OVERRIDES, **changes}.items():
        section, _, field = name.rpartition(".")
        setattr(config[section] if section else config, field, value)
    return config


def train_command(workdir, **changes) -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **changes}.items()]
    return [sys.executable, str(ROOT / "train.py"), f"--config={ROOT / 'configs/rect.py'}",
            f"--workdir={workdir}", *flags]


def start(command, devices: int | None) -> subprocess.Popen:
    """``devices`` simulated CPU devices; None: train.py's own choice (split_cpu_cores)."""
    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS)  # no device count from outside
    if devices:
        env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Final params of: 1 device in this process (2 seeds), 4 devices in one process
    (2 seeds: a 2 x 2 seeds-by-data mesh), train.py's own CPU layout (2 seeds: one core
    each where there are 2 cores), the same with ``--split_cpu_batch`` (1 seed: the
    batch split over the cores), and 2 processes with 1 device each (1 seed: the batch
    split across processes), all started together."""
    tmp = tmp_path_factory.mktemp("parallel")
    four = start(train_command(tmp / "four"), devices=4)
    split = start(train_command(tmp / "split"), devices=None)
    split_batch = start(train_command(tmp / "split_batch", num_seeds=1) + ["--split_cpu_batch"],
                        devices=None)
    address = f"localhost:{free_port()}"
    procs = [start(train_command(tmp / "two_procs", num_seeds=1) + [
        f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"],
        devices=1) for i in range(2)]
    config = config_for()
    single = training.train(config, tmp / "single")
    outputs = {"four": finish(four), "split": finish(split), "proc0": finish(procs[0]),
               "proc1": finish(procs[1]), "split_batch": finish(split_batch)}
    load = lambda name: training.load_checkpoint(tmp / name)[1].params
    init = training.init_states(config, models.build_model(config),
                                training.make_optimizer(config)).params
    return dict(single=single.params, four=load("four"), split=load("split"),
                two_procs=load("two_procs"), split_batch=load("split_batch"),
                init=init, outputs=outputs, tmp=tmp)


def test_four_devices_match_one_device(runs):
    chex.assert_trees_all_close(runs["four"], jax.device_get(runs["single"]), atol=PARAM_ATOL,
                                rtol=0)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(
        jax.tree_util.tree_leaves(runs["single"]), jax.tree_util.tree_leaves(runs["init"]),
        strict=True))
    assert moved > 1000 * PARAM_ATOL  # training moved params far beyond the tolerance


def test_replicas_split_over_cores_match_one_device(runs):
    cores = min(2, parallel.cpu_cores())  # gcd(2 seeds, cores)
    assert f"2 replica(s) on {cores} cpu device(s): {cores} for seeds" in runs["outputs"]["split"]
    chex.assert_trees_all_close(runs["split"], jax.device_get(runs["single"]),
                                atol=PARAM_ATOL, rtol=0)


def first_replica(params):
    return jax.tree_util.tree_map(lambda p: np.asarray(p)[:1], params)


def test_batch_split_over_idle_cores_matches_one_device(runs):
    cores = parallel.cpu_device_count(1, parallel.cpu_cores(), OVERRIDES["batch_size"],
                                      split_batch=True)
    assert (f"1 replica(s) on {cores} cpu device(s): 1 for seeds x {cores} for data"
            in runs["outputs"]["split_batch"])
    chex.assert_trees_all_close(runs["split_batch"], first_replica(runs["single"]),
                                atol=PARAM_ATOL, rtol=0)


def test_two_processes_match_one_process(runs):
    chex.assert_trees_all_close(runs["two_procs"], first_replica(runs["single"]),
                                atol=PARAM_ATOL, rtol=0)


def test_only_process_zero_writes_logs(runs):
    assert "Epoch 1:" in runs["outputs"]["proc0"]
    assert "Epoch" not in runs["outputs"]["proc1"]
    records = (runs["tmp"] / "two_procs" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2  # one per epoch, not one per process
    assert (runs["tmp"] / "two_procs" / "figures" / "training_curves.png").exists()


def test_mesh_puts_seeds_then_data():
    mesh = parallel.make_mesh(num_seeds=3)
    assert mesh.axis_names == parallel.MESH_AXES
    assert mesh.devices.size == jax.device_count()


@pytest.mark.parametrize("batch_size, mesh_shape, ok", [
    (32, {"seeds": 1, "data": 4}, True), (30, {"seeds": 1, "data": 4}, False),
    (30, {"seeds": 4, "data": 1}, True), (7, {"seeds": 2, "data": 2}, False)])
def test_batch_must_divide_over_the_data_axis(batch_size, mesh_shape, ok):
    if ok:
        parallel.check_batch_divides(batch_size, mesh_shape)
    else:
        with pytest.raises(parallel.UserError, match="does not divide over the"):
            parallel.check_batch_divides(batch_size, mesh_shape)


@pytest.mark.parametrize("replicas, cores, batch_size, split_batch, devices", [
    (2, 2, 32, False, 2), (8, 2, 32, False, 2), (1, 2, 32, False, 1), (5, 2, 32, False, 1),
    (3, 4, 32, False, 1), (6, 4, 32, False, 2),
    (1, 2, 32, True, 2), (5, 2, 32, True, 2), (2, 2, 32, True, 2), (6, 4, 32, True, 4),
    (1, 2, 31, True, 1), (2, 4, 31, True, 2), (1, 4, 30, True, 1), (2, 4, 30, True, 4)])
def test_cpu_devices_split_replicas_then_batches(replicas, cores, batch_size, split_batch,
                                                 devices):
    assert parallel.cpu_device_count(replicas, cores, batch_size, split_batch) == devices


def test_drawn_batches_are_the_split_images_at_those_indices():
    config = tiny_rect_config()
    keys = data.build_split_keys(config.data, rng.purpose_key(0, "data"))["train"]
    images = data.build_splits(config.data, rng.purpose_key(0, "data"))["train"].images
    idx = training.epoch_batches(jax.random.PRNGKey(1), 64, 16)
    draw = jax.jit(training.draw_batches, static_argnums=(0, 3))
    drawn = draw("rect", keys, idx, parallel.make_mesh(1))
    chex.assert_trees_all_equal(drawn, images[idx])


def test_eval_chunks_cover_every_index_once():
    idx, real = training.eval_chunks(n=10, chunk_size=4, shards=3)
    chex.assert_shape(idx, (2, 6))  # chunk size rounded up to a multiple of 3 shards
    assert sorted(np.asarray(idx)[np.asarray(real)].tolist()) == list(range(10))
