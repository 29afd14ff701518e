"""Devices, mesh and shardings for data-parallel training, on one process or many.

One mesh spans every device of every process, with axes ``seeds`` (replicas: the
leading axis of the stacked train states) and ``data`` (the batch). Parameters and
optimiser state are sharded over ``seeds`` and replicated over ``data``; every global
batch is sharded over ``data``. Multi-process runs join through JAX's own runtime,
``jax.distributed.initialize``; XLA inserts the collectives.
"""

from __future__ import annotations

import math
import os
import platform
from importlib import metadata

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaeshapes.validation import UserError

MESH_AXES = ("seeds", "data")
SEEDS, DATA = MESH_AXES


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           auto: bool = False) -> bool:
    """Joins a multi-process run if one is asked for; returns whether it did.

    Asked for by any argument, by ``auto`` (JAX detects SLURM, Open MPI, Kubernetes and
    Cloud TPU jobs) or by the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
    JAX_PROCESS_ID stand in for missing arguments; what is still missing JAX detects.
    CPU processes talk through gloo. Call before any computation.
    """
    given = (coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS"),
             num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES"),
             process_id if process_id is not None else _env_int("JAX_PROCESS_ID"))
    if not (auto or any(v is not None for v in given)):
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(*given)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"cannot join the multi-process run: {str(e).splitlines()[0]}") from e
    return True


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_device_count(num_replicas: int, cores: int, batch_size: int = 1,
                     split_batch: bool = False) -> int:
    """Single-threaded CPU devices to make: as many as divide both the replicas and the
    cores (one replica group per core); with ``split_batch``, every core, the ones the
    replicas leave idle taking a share of each batch, when the batch divides over them."""
    devices = math.gcd(num_replicas, cores)
    if split_batch and batch_size % (cores // devices) == 0:
        return cores
    return devices


def split_cpu_cores(num_replicas: int, batch_size: int = 1, split_batch: bool = False) -> int:
    """Call before JAX starts its backends. When the replicas divide over several cores,
    makes one single-threaded CPU device per core, so replicas train side by side, one
    core each (XLA:CPU otherwise splits every small op over all cores, which costs more
    than it gains); ``split_batch``: also the cores they leave idle, each with a share of
    every batch (``cpu_device_count``; ``make_mesh`` puts them on ``data``). Returns the
    number of CPU devices it asked for (1: nothing changed).

    Leaves alone a device count already set (XLA_FLAGS, JAX_NUM_CPU_DEVICES) and a JAX
    that has already started. Only the CPU backend is affected: on a GPU/TPU host the
    default devices stay the accelerators.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "JAX_NUM_CPU_DEVICES" in os.environ:
        return 1
    devices = cpu_device_count(num_replicas, cpu_cores(), batch_size, split_batch)
    if devices == 1:
        return 1
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # backends already initialised
        return 1
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    return devices


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise UserError(f"{name}={value!r}: must be a non-negative integer")
    return int(value)


LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # e.g. a source build without metadata
        return None


def environment(mesh: Mesh) -> dict:
    """What besides the config decides a run's float32 rounding, so that it can be repeated
    bit for bit: library versions, devices, the mesh, the CPU cores this process may use
    and XLA's flags (together they decide how XLA:CPU splits its ops over threads)."""
    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        **{name: _version(name) for name in LIBRARIES},
        "platform": device.platform,
        "device_kind": device.device_kind,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "cpu_cores": cpu_cores(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def is_main_process() -> bool:
    """Process 0 writes logs, figures and console output; every process checkpoints."""
    return jax.process_index() == 0


def make_mesh(num_seeds: int) -> Mesh:
    """A (seeds, data) mesh over all devices: as many devices on ``seeds`` as divide both
    the number of replicas and of devices, the rest on ``data``."""
    num_devices = jax.device_count()
    seed_shards = math.gcd(num_seeds, num_devices)
    devices = mesh_utils.create_device_mesh((seed_shards, num_devices // seed_shards))
    return Mesh(devices, MESH_AXES)


def data_shards(mesh: Mesh) -> int:
    """Devices each batch is split over."""
    return mesh.shape[DATA]


def check_batch_divides(batch_size: int, mesh_shape) -> None:
    """A clear error when the global batch cannot be split evenly over ``data``
    (``mesh_shape``: a mesh's axis sizes, e.g. ``mesh.shape``)."""
    shards, seed_shards = mesh_shape[DATA], mesh_shape[SEEDS]
    if batch_size % shards:
        raise UserError(
            f"config.batch_size={batch_size} does not divide over the {shards} devices of "
            f"the mesh's data axis ({shards * seed_shards} devices: {seed_shards} for seeds "
            f"x {shards} for data); use a multiple of {shards}")


def replica_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays with a leading replica axis: split over ``seeds``, copied over ``data``."""
    return NamedSharding(mesh, PartitionSpec(SEEDS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (small inputs, metrics read back by every process)."""
    return NamedSharding(mesh, PartitionSpec())


def put(tree, sharding: NamedSharding):
    """Arrays that every process holds in full (computed alike from the config) as global
    arrays laid out by ``sharding``; each process supplies its own devices' shards."""
    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(one, tree)


def shard_batch(x: jax.Array, mesh: Mesh, axis: int = 0) -> jax.Array:
    """Constrains axis ``axis`` of ``x`` (one replica's batch) to be split over ``data``;
    under ``vmap(..., spmd_axis_name="seeds")`` the replica axis goes over ``seeds``."""
    spec = [None] * x.ndim
    spec[axis] = DATA
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (a host-level all-gather)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))
