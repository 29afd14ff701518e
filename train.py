"""Trains a VAE: ``python train.py --config=configs/rect.py [--workdir=DIR]``.

Several processes (hosts) train one run together when given ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or ``--distributed`` on a cluster that JAX
detects by itself); every process runs the same command.
"""

from absl import app, flags
from ml_collections import config_flags

from vaeshapes import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/rect.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config.name>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run "
    "(also read from JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process "
                                      "run (also read from JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..n-1 (also "
                                   "read from JAX_PROCESS_ID).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process run, letting JAX detect the cluster "
    "(SLURM, Open MPI, Kubernetes, Cloud TPU) for any of the three flags above not given.")

_SPLIT_CPU = flags.DEFINE_bool(
    "split_cpu", True, "On a CPU, train replicas that divide over the cores one core each "
    "(one single-threaded device per core); --nosplit_cpu keeps one device on every core.")
_SPLIT_CPU_BATCH = flags.DEFINE_bool(
    "split_cpu_batch", False, "With --split_cpu: also split every batch over the cores "
    "the replicas leave idle (e.g. 1 or 5 seeds on 2 cores). Faster for small "
    "convolutions (rect, shapes: ~1.3x), slower for rect_best's dense layers (README, Speed).")


def main(argv):
    del argv
    distributed = dict(coordinator_address=_COORDINATOR.value,
                       num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                       auto=_DISTRIBUTED.value)
    return cli.run_train(_CONFIG.value, _WORKDIR.value, distributed, _SPLIT_CPU.value,
                         _SPLIT_CPU_BATCH.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=cli.parse_flags)
