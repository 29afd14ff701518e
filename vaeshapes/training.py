"""Train state, the compiled epoch, and the training loop with logging and checkpoints.

Design: everything below ``train`` is written for one replica and vmapped over a
leading seed axis, so ``num_seeds`` replicas train in one compiled program. A chunk
of epochs is one jitted ``lax.scan`` over epochs, each epoch a ``lax.scan`` over
shuffled batches; the host only sees chunk boundaries (logging, checkpoints).
Every random draw is ``fold_in(replica key, epoch)`` (then step), so a resumed run
replays exactly the data order and noise of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaeshapes import checkpoints, data, elbo, models, plotting, rng
from vaeshapes.validation import UserError, validate_config

# Fields a resumed run may change; any other difference from the checkpoint is refused.
RESUMABLE_CHANGES = ("num_epochs", "log_every", "checkpoint_every", "keep_checkpoints",
                     "keep_best", "eval_batch_size")


@flax.struct.dataclass
class TrainState:
    """One replica's training state (a leading seed axis when stacked)."""

    epoch: jax.Array  # int32 []: epochs completed
    step: jax.Array  # int32 []: optimiser steps completed
    params: Any
    opt_state: Any
    key: jax.Array  # uint32 [2]: the replica's training key; draws fold in epoch/step


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or parameters."""


class Interrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; the run stopped at a chunk boundary with a checkpoint."""


class StopSignals:
    """Context manager: SIGTERM/SIGINT set ``requested`` instead of killing the process,
    so the loop can finish its chunk and checkpoint. A second SIGINT stops at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after this chunk "
              "of epochs (a checkpoint will be written)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class WorkdirLock:
    """One writer per workdir: ``<workdir>/.lock`` holds the owner's pid; a lock left by
    a dead process is taken over."""

    def __init__(self, workdir: Path):
        self.path = workdir / ".lock"

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self.path.read_text().strip()
                if owner.isdigit() and _pid_alive(int(owner)) and int(owner) != os.getpid():
                    raise UserError(f"{self.path.parent} is in use by a running train.py "
                                    f"(pid {owner}); wait for it or use another "
                                    "--workdir") from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise UserError(f"cannot take the lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_optimizer(config) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def likelihood_name(config) -> str:
    return "categorical" if config.model.num_classes else "bernoulli"


def init_state(config, model, optimizer, init_key: jax.Array,
               train_key: jax.Array) -> TrainState:
    """Fresh state for one replica."""
    params = models.init_params(model, config, init_key)
    return TrainState(epoch=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32),
                      params=params, opt_state=optimizer.init(params), key=train_key)


def init_states(config, model, optimizer) -> TrainState:
    """Fresh states for ``config.num_seeds`` replicas, stacked on a leading axis."""
    init_keys = rng.replica_keys(config.seed, "init", config.num_seeds)
    train_keys = rng.replica_keys(config.seed, "train", config.num_seeds)
    return jax.vmap(partial(init_state, config, model, optimizer))(init_keys, train_keys)


def train_step(state: TrainState, batch: jax.Array, *, config, model, optimizer):
    """One Adam step on the negative ELBO (beta-weighted); returns (state, metrics)."""
    key = jax.random.fold_in(jax.random.fold_in(state.key, state.epoch), state.step)

    def loss_fn(params):
        terms = elbo.elbo_terms(model, params, batch, key, likelihood=likelihood_name(config),
                                noise_std=config.latent_noise_std)
        return elbo.loss(terms, config.beta), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, opt_state=opt_state,
                          params=optax.apply_updates(state.params, updates))
    metrics = dict(loss=loss, recon=terms["recon"].mean(), kl=terms["kl"].mean(),
                   grad_norm=optax.tree.norm(grads))
    return state, metrics


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Indices [num_batches, batch_size] of a shuffled epoch (last partial batch dropped)."""
    num_batches = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)[: num_batches * batch_size]
    return perm.reshape(num_batches, batch_size)


def validation_terms(params, images: jax.Array, key: jax.Array, *, config,
                     model) -> dict[str, jax.Array]:
    """Mean ELBO terms (recon, kl; nats per image) over ``images``, in compiled batches."""
    keys = jax.random.split(key, images.shape[0])

    def one(args):
        x, k = args
        terms = elbo.elbo_terms(model, params, x[None], k, likelihood=likelihood_name(config))
        return {name: v[0] for name, v in terms.items()}

    terms = jax.lax.map(one, (images, keys), batch_size=config.eval_batch_size)
    return {name: v.mean() for name, v in terms.items()}


def run_epoch(state: TrainState, train_images: jax.Array, val_images: jax.Array | None,
              *, config, model, optimizer):
    """One epoch for one replica: shuffled batches in a ``lax.scan``; mean metrics."""
    epoch_key = jax.random.fold_in(state.key, state.epoch)
    idx = epoch_batches(jax.random.fold_in(epoch_key, 0), train_images.shape[0],
                        config.batch_size)
    step = partial(train_step, config=config, model=model, optimizer=optimizer)
    state, metrics = jax.lax.scan(lambda s, i: step(s, train_images[i]), state, idx)
    metrics = {f"train/{k}": v.mean() for k, v in metrics.items()}
    if val_images is not None:
        val = validation_terms(state.params, val_images, jax.random.fold_in(epoch_key, 1),
                               config=config, model=model)
        metrics.update({f"val/{k}": v for k, v in val.items()})
        metrics["val/loss"] = val["recon"] + config.beta * val["kl"]
    return state.replace(epoch=state.epoch + 1), metrics


def make_train_chunk(config, model, optimizer):
    """Jitted ``(states, train_images, val_images, num_epochs) -> (states, metrics)``.

    ``states`` carry a leading seed axis; metrics come back as arrays [epochs, seeds].
    The input states are donated.
    """
    epoch = partial(run_epoch, config=config, model=model, optimizer=optimizer)
    epoch_all_seeds = jax.vmap(epoch, in_axes=(0, None, None))

    def chunk(states, train_images, val_images, num_epochs):
        chex.assert_rank(states.epoch, 1)
        return jax.lax.scan(lambda s, _: epoch_all_seeds(s, train_images, val_images),
                            states, None, length=num_epochs)

    return jax.jit(chunk, static_argnames="num_epochs", donate_argnums=0)


def chunk_epochs(config) -> int:
    """Epochs per compiled call: ~20 progress updates, never past a checkpoint."""
    return max(1, min(config.num_epochs // 20, config.checkpoint_every))


def epoch_record(epoch: int, metrics: dict[str, np.ndarray], num_pixels: int) -> dict:
    """A metrics.jsonl record from one epoch's per-seed metrics (nats per image in).

    Means over seeds under the plain keys (``/std`` beside them with several seeds);
    recon/kl/loss also per pixel.
    """
    record: dict[str, Any] = {"epoch": epoch}
    for name, values in sorted(metrics.items()):
        values = np.asarray(values, np.float64)
        split, term = name.split("/")
        if term in ("loss", "recon", "kl"):
            keys_values = [(f"{split}/{term}_per_pixel", values / num_pixels),
                           (f"{split}/{term}_nats_per_image", values)]
        else:
            keys_values = [(name, values)]
        for key, v in keys_values:
            record[key] = float(v.mean())
            if v.size > 1:
                record[f"{key}/std"] = float(v.std())
    return record


def console_line(record: dict) -> str:
    """The source's format: ``Epoch 100: Loss = 0.8559 (Recon: 0.7493, KL: 0.1065)``."""
    line = (f"Epoch {record['epoch']}: Loss = {record['train/loss_per_pixel']:.4f} "
            f"(Recon: {record['train/recon_per_pixel']:.4f}, "
            f"KL: {record['train/kl_per_pixel']:.4f})")
    if "val/loss_per_pixel" in record:
        line += f" | val loss {record['val/loss_per_pixel']:.4f}"
    return line


def should_log(epoch: int, config) -> bool:
    return epoch % config.log_every == 0 or epoch == config.num_epochs - 1


class Progress:
    """A one-line progress bar over epochs on stderr (a line per update when not a tty)."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.time()
        self.tty = sys.stderr.isatty()

    def update(self, done: int) -> None:
        elapsed = time.time() - self.t0
        rate = (done - self.start) / max(elapsed, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        filled = int(30 * done / self.total)
        bar = "#" * filled + "-" * (30 - filled)
        msg = (f"[{bar}] {done}/{self.total} epochs  {elapsed:.1f}s elapsed  "
               f"ETA {eta:.1f}s")
        sys.stderr.write(("\r" + msg) if self.tty else (msg + "\n"))
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class MetricsLog:
    """Appends records to metrics.jsonl; on resume, drops records from epochs to be redone."""

    def __init__(self, path: Path, resume_epoch: int):
        self.path = path
        kept = []
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] < resume_epoch]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def first_nonfinite_epoch(metrics: dict[str, np.ndarray], params) -> int | None:
    """Index (within a chunk) of the first epoch whose train loss [epochs, seeds] is not
    finite, 0 if only the parameters are, None if everything is finite."""
    finite_loss = np.isfinite(metrics["train/loss"]).all(axis=1)
    if finite_loss.all() and bool(_all_finite(params)):
        return None
    return int(np.argmax(~finite_loss))


def _check_resumable(stored: dict, config, path: Path) -> None:
    current = checkpoints.config_to_json_dict(config)
    diffs = sorted(k for k in set(stored) | set(current)
                   if k not in RESUMABLE_CHANGES and stored.get(k) != current.get(k))
    if diffs:
        raise UserError(f"{path} holds a run with a different config (fields: "
                        f"{', '.join(diffs)}); use another --workdir or the same config")


def load_checkpoint(path: str | Path):
    """(config, stacked states, epoch, checkpoint dir) of a workdir or one step dir."""
    ckpt_dir, epoch = checkpoints.locate(path)
    mngr = checkpoints.manager(ckpt_dir, read_only=True)
    config = checkpoints.restore_config(mngr, epoch)
    validate_config(config)
    abstract = jax.eval_shape(lambda: init_states(config, models.build_model(config),
                                                  make_optimizer(config)))
    states = checkpoints.restore_states(mngr, epoch, abstract)
    mngr.close()
    return config, states, epoch, ckpt_dir


def load_init_params(config, target_params):
    """Params from ``config.init_from`` (a workdir or step dir) for every replica: one to
    one when it has as many seeds, else its seed 0 copied to all."""
    source_config, states, _, _ = load_checkpoint(config.init_from)
    params = states.params
    if source_config.num_seeds != config.num_seeds:
        params = jax.tree_util.tree_map(
            lambda p: jnp.broadcast_to(p[0], (config.num_seeds,) + p.shape[1:]), params)
    try:
        chex.assert_trees_all_equal_shapes(params, target_params)
    except AssertionError as e:
        raise UserError(f"config.init_from={config.init_from}: its model differs from this "
                        "config's model") from e
    return params


def start_states(config, model, optimizer, mngr) -> TrainState:
    """Latest checkpoint in ``workdir`` if there is one, else a fresh (or init_from) start."""
    states = init_states(config, model, optimizer)
    latest = mngr.latest_step()
    if latest is not None:
        _check_resumable(checkpoints.config_to_json_dict(
            checkpoints.restore_config(mngr, latest)), config, mngr.directory / str(latest))
        states = checkpoints.restore_states(mngr, latest, states)
        print(f"Resuming from {mngr.directory / str(latest)} (epoch {latest})", flush=True)
    elif config.init_from:
        params = load_init_params(config, states.params)
        states = states.replace(params=params, opt_state=jax.vmap(optimizer.init)(params))
        print(f"Initialised params from {config.init_from}", flush=True)
    return states


def train(config, workdir: str | Path) -> TrainState:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns states.

    Raises Interrupted (after checkpointing) on SIGTERM/SIGINT, NonFiniteError on a
    non-finite loss or parameters, UserError on bad input or a workdir in use.
    """
    validate_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir), StopSignals() as stop:
        return _train_locked(config, workdir, stop)


def _train_locked(config, workdir: Path, stop: StopSignals) -> TrainState:
    splits = data.build_splits(config.data, rng.purpose_key(config.seed, "data"))
    train_images = splits["train"].images
    val_images = splits["val"].images if "val" in splits else None
    num_pixels = math.prod(data.IMAGE_SHAPES[config.data.name])
    model = models.build_model(config)
    optimizer = make_optimizer(config)
    mngr = checkpoints.manager(workdir / checkpoints.CHECKPOINT_DIR, config.keep_checkpoints)
    best = (checkpoints.manager(workdir / checkpoints.BEST_DIR, 1,
                                keep_lowest=checkpoints.BEST_METRIC)
            if config.keep_best and val_images is not None else None)
    states = start_states(config, model, optimizer, mngr)
    (workdir / "config.json").write_text(
        json.dumps(checkpoints.config_to_json_dict(config), indent=2))

    epoch = int(states.epoch[0])
    log = MetricsLog(workdir / "metrics.jsonl", epoch)
    train_chunk = make_train_chunk(config, model, optimizer)
    progress = Progress(config.num_epochs, epoch)
    last_saved = mngr.latest_step()
    while epoch < config.num_epochs:
        n = min(chunk_epochs(config), config.num_epochs - epoch)
        states, metrics = train_chunk(states, train_images, val_images, num_epochs=n)
        metrics = jax.device_get(metrics)
        bad = first_nonfinite_epoch(metrics, states.params)
        if bad is not None:
            raise NonFiniteError(
                f"non-finite loss or parameters in epochs {epoch}..{epoch + n - 1} (first bad "
                f"epoch {epoch + bad}); last good checkpoint: "
                f"{mngr.directory / str(last_saved) if last_saved is not None else 'none'}")
        for i in range(n):
            if should_log(epoch + i, config):
                record = epoch_record(epoch + i, {k: v[i] for k, v in metrics.items()},
                                      num_pixels)
                print(console_line(record), flush=True)
                log.write(record)
        epoch += n
        crossed = epoch // config.checkpoint_every > (epoch - n) // config.checkpoint_every
        if crossed or epoch == config.num_epochs or stop.requested:
            checkpoints.save(mngr, epoch, states, config)
            last_saved = epoch
            if best is not None:
                val_loss = float(np.mean(metrics["val/loss"][-1]) / num_pixels)
                checkpoints.save(best, epoch, states, config, {checkpoints.BEST_METRIC: val_loss})
        progress.update(epoch)
        if stop.requested and epoch < config.num_epochs:
            _close(mngr, best)
            raise Interrupted(f"stopped at epoch {epoch} of {config.num_epochs}; checkpoint "
                              f"{mngr.directory / str(epoch)}. Resume with the same command")
    _close(mngr, best)
    plotting.training_curves(log.path, workdir / "figures" / "training_curves.png")
    return states


def _close(*managers) -> None:
    for mngr in managers:
        if mngr is not None:
            mngr.close()
