"""Orbax checkpoints: train state + resolved config, one step per epochs-completed count.

Layout: ``<workdir>/checkpoints/<epoch>/{state,config}`` (the latest few) and
``<workdir>/best/<epoch>/`` (lowest validation loss); ``<workdir>/selection.json`` in a
run chosen among seeds. A checkpoint carries its config, so
``eval.py`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_collections
import orbax.checkpoint as ocp

from vaeshapes.validation import UserError

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"  # the one checkpoint with the lowest validation loss
SELECTION_FILE = "selection.json"  # a run chosen among seeds (selection.py)
BEST_METRIC = "val/loss_per_pixel"
# Config fields added after checkpoints were first written, with the value that a
# checkpoint written without them is read with (so old runs still load).
ADDED_FIELDS = {"keep_best": True, "kl_warmup_epochs": 0, "free_bits": 0.0,
                "lr_schedule": "constant", "lr_warmup_epochs": 0, "data.stream": False,
                "sweep_betas": (), "model.decoder_dense": (),
                "grad_clip_norm": 0.0, "train_importance_samples": 1,
                "train_elbo_encoder": False, "model.prior_components": 0,
                "model.prior_type": "mixture", "model.prior_hidden": (256,),
                "model.prior_fourier_features": 0, "model.prior_fourier_scale": 1.0,
                "model.prior_order": (),
                "train_only_prior": False, "rollback_tolerance": 0.0,
                "rollback_patience": 50, "select_candidates": 1, "select_at_epoch": 100,
                "select_window_epochs": 100, "first_replica": 0, "restart_above": 0.0,
                "restart_every": 50}


def config_to_json_dict(config) -> dict:
    """The config as plain JSON types (tuples become lists), for storage and comparison."""
    return json.loads(json.dumps(config.to_dict()))


def manager(checkpoint_dir: Path, max_to_keep: int | None = None,
            read_only: bool = False, keep_lowest: str | None = None) -> ocp.CheckpointManager:
    """A synchronous CheckpointManager over ``checkpoint_dir`` keeping the ``max_to_keep``
    latest checkpoints, or, with ``keep_lowest``, those with the lowest value of that
    metric (passed to ``save``)."""
    best_fn = (lambda metrics: metrics[keep_lowest]) if keep_lowest else None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1, best_fn=best_fn, best_mode="min",
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(checkpoint_dir).absolute(), options=options)


def save(mngr: ocp.CheckpointManager, epoch: int, states, config,
         metrics: dict[str, float] | None = None) -> None:
    """Writes ``states`` and ``config`` as step ``epoch`` (atomic: tmp dir, then rename)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(states),
                              config=ocp.args.JsonSave(config_to_json_dict(config)))
    mngr.save(epoch, args=args, metrics=metrics, force=True)
    mngr.wait_until_finished()


def restore_config(mngr: ocp.CheckpointManager, epoch: int) -> ml_collections.ConfigDict:
    """The config stored with checkpoint ``epoch`` (fields added since: ADDED_FIELDS)."""
    try:
        stored = mngr.restore(epoch, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - any read failure is a bad checkpoint
        raise UserError(f"cannot read the config of checkpoint "
                        f"{mngr.directory / str(epoch)}: {type(e).__name__}") from e
    config = ml_collections.ConfigDict(stored.config)
    for field, value in ADDED_FIELDS.items():
        group, _, name = field.rpartition(".")
        node = config[group] if group else config
        if name not in node:
            node[name] = value
    return config


def restore_states(mngr: ocp.CheckpointManager, epoch: int, target):
    """The train state of checkpoint ``epoch``, shaped like ``target`` (arrays or abstract,
    a dataclass). A checkpoint written before a field that is None here existed (an
    optional state such as ``restarts``) is read without it."""
    restore = lambda item: mngr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(item))).state
    try:
        return restore(target)
    except Exception as e:  # noqa: BLE001 - any read failure is a bad checkpoint
        error = e
    present = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)
               if getattr(target, f.name) is not None}
    if len(present) < len(dataclasses.fields(target)):
        try:
            return target.replace(**restore(present))
        except Exception:  # noqa: BLE001, S110 - report the first error below
            pass
    raise UserError(f"cannot restore checkpoint {mngr.directory / str(epoch)}: "
                    f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") from error


def saved_epochs(ckpt_dir: Path) -> list[int]:
    """The epochs with a complete checkpoint in ``ckpt_dir`` (none if it does not exist)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and (p / "state").is_dir())


def locate(path: str | Path, flag: str = "--ckpt") -> tuple[Path, int]:
    """(checkpoint dir, epoch) for a workdir, its checkpoints/ dir, or one step dir.

    A workdir or checkpoints/ dir resolves to its latest step. Errors name ``flag``, the
    setting that gave the path.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag}={path}: no such file or directory")
    if path.name.isdigit() and (path / "state").is_dir():
        return path.parent, int(path.name)
    ckpt_dir = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    steps = saved_epochs(ckpt_dir)
    if not steps:
        raise UserError(f"{flag}={path}: no checkpoint found (expected a workdir, its "
                        f"{CHECKPOINT_DIR}/ folder, or a step folder)")
    return ckpt_dir, steps[-1]
