"""Train state, the compiled epoch, and the training loop with logging and checkpoints.

Design: everything below ``train`` is written for one replica and vmapped over a
leading replica axis, so ``num_seeds`` replicas (times ``len(sweep_betas)`` in a beta
sweep, each with its own beta) train in one compiled program. A chunk
of epochs is one jitted ``lax.scan`` over epochs, each epoch a ``lax.scan`` over
shuffled batches; the host only sees chunk boundaries (logging, checkpoints).
Every random draw is ``fold_in(replica key, epoch)`` (then step), so a resumed run
replays exactly the data order and noise of an uninterrupted one.

Scale-out (``parallel``): the compiled chunk runs on a (seeds, data) mesh over every
device of every process. Splits travel as the keys that draw them; each epoch, every
device draws only its shard of every global batch (the global permutation's slice), so
a batch is the same whatever the number of devices and processes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaeshapes import analysis, checkpoints, data, elbo, models, parallel, plotting, rng
from vaeshapes.validation import UserError, validate_config

# Fields a resumed run may change; any other difference from the checkpoint is refused.
RESUMABLE_CHANGES = ("num_epochs", "log_every", "checkpoint_every", "keep_checkpoints",
                     "keep_best", "eval_batch_size", "select_candidates", "select_at_epoch",
                     "select_window_epochs")


@flax.struct.dataclass
class TrainState:
    """One replica's training state (a leading seed axis when stacked)."""

    epoch: jax.Array  # int32 []: epochs completed
    step: jax.Array  # int32 []: optimiser steps completed
    params: Any
    opt_state: Any
    key: jax.Array  # uint32 [2]: the replica's training key; draws fold in epoch/step
    fallback: Any = None  # Fallback with config.rollback_tolerance > 0, else None
    restarts: Any = None  # int32 []: restarts so far with config.restart_above > 0, else None


@flax.struct.dataclass
class Fallback:
    """A replica's state at its lowest validation loss so far (``roll_back_if_worse``)."""

    params: Any
    opt_state: Any
    val_loss: jax.Array  # float32 []: nats per image (beta-weighted); inf before epoch 1
    rollbacks: jax.Array  # int32 []: rollbacks so far
    epochs_above: jax.Array  # int32 []: consecutive epochs above the tolerance, up to now


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


def steps_per_epoch(config) -> int:
    return config.data.num_train // config.batch_size


def learning_rate(config) -> float | optax.Schedule:
    """``config.learning_rate``, after a linear warm-up from 0 over ``lr_warmup_epochs``,
    then constant or (``lr_schedule="cosine"``) decaying to 0 at the end of the run."""
    warmup = config.lr_warmup_epochs * steps_per_epoch(config)
    peak = config.learning_rate
    if config.lr_schedule == "cosine":
        total = max(config.num_epochs * steps_per_epoch(config), warmup + 1)
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total)
    if warmup:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
            [warmup])
    return peak


def kl_weight(config, step: jax.Array, beta: float | jax.Array) -> float | jax.Array:
    """The replica's ``beta`` at optimiser step ``step``: rising linearly from 0 over
    ``kl_warmup_epochs``."""
    warmup = config.kl_warmup_epochs * steps_per_epoch(config)
    if not warmup:
        return beta
    return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup)


def num_replicas(config) -> int:
    """Replicas on the leading axis: ``num_seeds`` per beta of a sweep (or per run)."""
    return config.num_seeds * max(1, len(config.sweep_betas))


def replica_betas(config) -> np.ndarray:
    """float32 [replicas]: each replica's beta. In a sweep, replica ``b * num_seeds + s``
    is seed ``s`` at ``sweep_betas[b]``; without one, every replica has ``config.beta``."""
    betas = config.sweep_betas or (config.beta,)
    return np.repeat(np.asarray(betas, np.float32), config.num_seeds)


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam at ``learning_rate(config)``; with ``grad_clip_norm`` > 0, gradients are first
    scaled down to at most that global norm; with ``train_only_prior``, every parameter
    but the learned prior's (``prior_*``) stays fixed."""
    optimizer = optax.adam(learning_rate(config))
    if config.grad_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
    if config.train_only_prior:
        optimizer = optax.multi_transform(
            {"train": optimizer, "fixed": optax.set_to_zero()},
            lambda params: {"params": {name: "train" if is_prior_param(name) else "fixed"
                                       for name in params["params"]}})
    return optimizer


def likelihood_name(config) -> str:
    return "categorical" if config.model.num_classes else "bernoulli"


def init_state(config, model, optimizer, init_key: jax.Array,
               train_key: jax.Array) -> TrainState:
    """Fresh state for one replica."""
    params = models.init_params(model, config, init_key)
    opt_state = optimizer.init(params)
    fallback = None
    if config.rollback_tolerance:
        fallback = Fallback(*jax.tree_util.tree_map(jnp.copy, (params, opt_state)),
                            val_loss=jnp.array(jnp.inf, jnp.float32),
                            rollbacks=jnp.zeros((), jnp.int32),
                            epochs_above=jnp.zeros((), jnp.int32))
    restarts = jnp.zeros((), jnp.int32) if config.restart_above else None
    return TrainState(epoch=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32),
                      params=params, opt_state=opt_state, key=train_key, fallback=fallback,
                      restarts=restarts)


def init_states(config, model, optimizer) -> TrainState:
    """Fresh states for every replica, stacked on a leading axis. Seed ``s`` has the same
    keys at every beta of a sweep (common random numbers: betas differ only in beta)."""
    repeats = num_replicas(config) // config.num_seeds
    init_keys, train_keys = (
        jnp.tile(rng.replica_keys(config.seed, purpose, config.num_seeds,
                                  config.first_replica), (repeats, 1))
        for purpose in ("init", "train"))
    return jax.vmap(partial(init_state, config, model, optimizer))(init_keys, train_keys)


def init_states_on(mesh, config, model, optimizer) -> TrainState:
    """``init_states`` (computed op by op, as every run has), sharded over ``mesh``."""
    return parallel.put(init_states(config, model, optimizer),
                        parallel.replica_sharding(mesh))


def split_keys_on(mesh, config) -> dict[str, data.SplitKeys]:
    """The config's split keys (``data.build_split_keys``), copied to every device."""
    keys = data.build_split_keys(config.data, rng.purpose_key(config.seed, "data"))
    return parallel.put(keys, parallel.replicated(mesh))


def train_step(state: TrainState, batch: jax.Array, beta: jax.Array, *, config, model,
               optimizer):
    """One Adam step on the negative ELBO (``beta``-weighted, with the config's KL warm-up
    and free bits), or on -IWAE_K when ``train_importance_samples`` = K > 1 (the encoder
    on the ELBO with ``train_elbo_encoder``); returns (state, metrics)."""
    key = jax.random.fold_in(jax.random.fold_in(state.key, state.epoch), state.step)

    def loss_fn(params):
        weight = kl_weight(config, state.step, beta)
        if config.train_importance_samples > 1:
            terms = elbo.iwae_terms(model, params, batch, key, likelihood=likelihood_name(config),
                                    num_samples=config.train_importance_samples, beta=weight,
                                    elbo_encoder=config.train_elbo_encoder)
            return -terms["objective"].mean(), terms
        terms = elbo.elbo_terms(model, params, batch, key, likelihood=likelihood_name(config),
                                noise_std=config.latent_noise_std)
        return elbo.loss(terms, weight, config.free_bits), terms

    (loss, terms), grads = value_and_grad(loss_fn, state.params, config.train_only_prior)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, opt_state=opt_state,
                          params=optax.apply_updates(state.params, updates))
    metrics = dict(loss=loss, recon=terms["recon"].mean(), kl=terms["kl"].mean(),
                   grad_norm=optax.tree.norm(grads))
    return state, metrics


def is_prior_param(name: str) -> bool:
    """Whether the top-level parameter ``name`` belongs to the learned prior."""
    return name.startswith("prior_")


def split_prior(params) -> tuple[dict, dict]:
    """(the learned prior's top-level params, the rest) of a ``{"params": ...}`` tree."""
    inner = params["params"]
    return ({k: v for k, v in inner.items() if is_prior_param(k)},
            {k: v for k, v in inner.items() if not is_prior_param(k)})


def value_and_grad(loss_fn, params, only_prior: bool = False):
    """``jax.value_and_grad(loss_fn, has_aux=True)(params)``; with ``only_prior``, only the
    learned prior's gradient is computed and every other one is zero (no backward pass
    through the encoder and decoder)."""
    if not only_prior:
        return jax.value_and_grad(loss_fn, has_aux=True)(params)
    prior, rest = split_prior(params)
    out, prior_grads = jax.value_and_grad(
        lambda p: loss_fn({"params": {**rest, **p}}), has_aux=True)(prior)
    return out, {"params": {**jax.tree_util.tree_map(jnp.zeros_like, rest), **prior_grads}}


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Indices [num_batches, batch_size] of a shuffled epoch (last partial batch dropped)."""
    num_batches = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)[: num_batches * batch_size]
    return perm.reshape(num_batches, batch_size)


def draw_batches(name: str, split: data.SplitKeys, idx: jax.Array, mesh) -> jax.Array:
    """Images of ``split`` at ``idx`` [..., batch]; each device draws its shard of every
    batch (the last axis of ``idx``, split over the mesh's data axis)."""
    axis = idx.ndim - 1
    shard = lambda x: parallel.shard_batch(x, mesh, axis)
    labels = None if split.labels is None else shard(split.labels[idx])
    images = data.draw(name, data.SplitKeys(shard(split.keys[idx]), labels)).images
    return shard(images)


def eval_chunks(n: int, chunk_size: int, shards: int) -> tuple[jax.Array, jax.Array]:
    """Indices [chunks, size] covering 0..n-1 (wrapping to fill the last chunk) and a mask
    of the real ones; size is ``chunk_size`` (at most n) rounded up to a multiple of
    ``shards``."""
    size = -(-min(chunk_size, n) // shards) * shards
    flat = jnp.arange(-(-n // size) * size)
    return (flat % n).reshape(-1, size), (flat < n).reshape(-1, size)


def validation_terms(params, split: data.SplitKeys, key: jax.Array, *, config, model,
                     mesh) -> dict[str, jax.Array]:
    """Mean ELBO terms (recon, kl; nats per image) over ``split``, in compiled chunks of
    ``config.eval_batch_size`` images, one noise key per image."""
    n = split.keys.shape[0]
    image_keys = jax.random.split(key, n)

    def one(x, k):
        terms = elbo.elbo_terms(model, params, x[None], k, likelihood=likelihood_name(config))
        return {name: terms[name][0] for name in ("recon", "kl")}

    def chunk_sums(args):
        idx, real = args
        terms = jax.vmap(one)(draw_batches(config.data.name, split, idx, mesh),
                              image_keys[idx])
        return {name: jnp.where(real, v, 0.0).sum() for name, v in terms.items()}

    sums = jax.lax.map(chunk_sums, eval_chunks(n, config.eval_batch_size,
                                               parallel.data_shards(mesh)))
    return {name: v.sum() / n for name, v in sums.items()}


def roll_back_if_worse(state: TrainState, val_loss: jax.Array, tolerance: float | jax.Array,
                       patience: int | jax.Array = 1) -> TrainState:
    """``state`` after an epoch with validation loss ``val_loss`` (nats per image, []):
    back to its fallback's params and Adam moments if the loss is not finite, or has
    exceeded the fallback's times 1 + ``tolerance`` for ``patience`` epochs in a row
    (epoch, step counts and key go on, so fresh batches follow); else the fallback becomes
    this state if the loss is its lowest yet."""
    chex.assert_shape(val_loss, ())
    fallback = state.fallback
    above = ~(val_loss <= fallback.val_loss * (1 + tolerance))  # NaN is above
    epochs_above = jnp.where(above, fallback.epochs_above + 1, 0)
    worse = ~jnp.isfinite(val_loss) | (epochs_above >= patience)
    better = val_loss < fallback.val_loss

    def pick(cond, new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)

    def restore_floats(current, saved):  # integer leaves are optimiser step counts
        return jnp.where(worse, saved, current) if jnp.issubdtype(current.dtype,
                                                                   jnp.floating) else current

    fallback = Fallback(params=pick(better, state.params, fallback.params),
                        opt_state=pick(better, state.opt_state, fallback.opt_state),
                        val_loss=jnp.where(better, val_loss, fallback.val_loss),
                        rollbacks=fallback.rollbacks + worse.astype(jnp.int32),
                        epochs_above=jnp.where(worse, 0, epochs_above))
    return state.replace(
        params=pick(worse, state.fallback.params, state.params),
        opt_state=jax.tree_util.tree_map(restore_floats, state.opt_state,
                                         state.fallback.opt_state),
        fallback=fallback)


def restart_if_stuck(state: TrainState, val_loss: jax.Array, fresh: TrainState,
                     above: float | jax.Array, every: int | jax.Array) -> TrainState:
    """``state`` after an epoch with validation loss ``val_loss`` (nats per image, []); but
    at the end of every ``every``-th epoch, if the replica's best loss so far (with
    rollback; else this one) is above ``above`` or not finite, ``fresh``'s params,
    optimiser state (its schedule starts again) and fallback (the rollback count goes on),
    with the restart counted; epoch, step count and key go on. A replica that was once
    below ``above`` is left to rollback: a late spike does not discard its training."""
    chex.assert_shape(val_loss, ())
    best = val_loss if state.fallback is None else jnp.fmin(val_loss, state.fallback.val_loss)
    stuck = ((state.epoch + 1) % every == 0) & ~(best <= above)

    def pick(new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(stuck, a, b), new, old)

    fallback = state.fallback
    if fallback is not None:
        fallback = pick(fresh.fallback.replace(rollbacks=fallback.rollbacks), fallback)
    return state.replace(params=pick(fresh.params, state.params),
                         opt_state=pick(fresh.opt_state, state.opt_state), fallback=fallback,
                         restarts=state.restarts + stuck.astype(jnp.int32))


def epoch_train_split(config, train: data.SplitKeys, epoch_key: jax.Array) -> data.SplitKeys:
    """The epoch's training images: the fixed split, or with ``data.stream`` as many fresh
    ones, drawn from the replica's epoch key."""
    if not config.data.stream:
        return train
    return data.split_keys(config.data.name, jax.random.fold_in(epoch_key, 2),
                           train.keys.shape[0])


def run_epoch(state: TrainState, beta: jax.Array, train: data.SplitKeys,
              val: data.SplitKeys | None, *, config, model, optimizer, mesh):
    """One epoch for one replica with its ``beta``: shuffled batches in a ``lax.scan``;
    mean metrics."""
    epoch_key = jax.random.fold_in(state.key, state.epoch)
    train = epoch_train_split(config, train, epoch_key)
    idx = epoch_batches(jax.random.fold_in(epoch_key, 0), train.keys.shape[0],
                        config.batch_size)
    batches = draw_batches(config.data.name, train, idx, mesh)
    step = partial(train_step, beta=beta, config=config, model=model, optimizer=optimizer)
    state, metrics = jax.lax.scan(step, state, batches)
    metrics = {f"train/{k}": v.mean() for k, v in metrics.items()}
    if val is not None:
        val = validation_terms(state.params, val, jax.random.fold_in(epoch_key, 1),
                               config=config, model=model, mesh=mesh)
        metrics.update({f"val/{k}": v for k, v in val.items()})
        metrics["val/loss"] = val["recon"] + beta * val["kl"]
        if state.fallback is not None:
            state = roll_back_if_worse(state, metrics["val/loss"], config.rollback_tolerance,
                                       config.rollback_patience)
            metrics["train/rollbacks"] = state.fallback.rollbacks
        if state.restarts is not None:
            fresh = init_state(config, model, optimizer, jax.random.fold_in(epoch_key, 3),
                               state.key)
            state = restart_if_stuck(state, metrics["val/loss"], fresh, config.restart_above,
                                     config.restart_every)
            metrics["train/restarts"] = state.restarts
    return state.replace(epoch=state.epoch + 1), metrics


def make_train_chunk(config, model, optimizer, mesh):
    """Jitted ``(states, betas, train, val, num_epochs) -> (states, metrics)`` on ``mesh``.

    ``train``/``val`` are ``data.SplitKeys`` (val may be None). ``states`` and ``betas``
    [replicas] carry a leading replica axis (sharded over the mesh's seeds axis); metrics
    come back as arrays [epochs, replicas], copied to every device so every process can
    read them. The input states are donated.
    """
    epoch = partial(run_epoch, config=config, model=model, optimizer=optimizer, mesh=mesh)
    epoch_all_seeds = jax.vmap(epoch, in_axes=(0, 0, None, None),
                               spmd_axis_name=parallel.SEEDS)

    def chunk(states, betas, train, val, num_epochs):
        chex.assert_rank(states.epoch, 1)
        chex.assert_shape(betas, states.epoch.shape)
        return jax.lax.scan(lambda s, _: epoch_all_seeds(s, betas, train, val),
                            states, None, length=num_epochs)

    replicas, everywhere = parallel.replica_sharding(mesh), parallel.replicated(mesh)
    return jax.jit(chunk, static_argnums=4, donate_argnums=0,
                   in_shardings=(replicas, replicas, everywhere, everywhere),
                   out_shardings=(replicas, everywhere))


class Trainer(NamedTuple):
    """What a run compiles and feeds, built once from the config (``build_trainer``)."""

    config: Any
    model: models.ConvVAE
    optimizer: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    splits: dict[str, data.SplitKeys]  # on every device
    betas: jax.Array  # [replicas] (replica_betas), sharded like the states
    chunk: Any  # make_train_chunk's jitted function

    def fresh_states(self) -> TrainState:
        return init_states_on(self.mesh, self.config, self.model, self.optimizer)

    def run(self, states: TrainState, num_epochs: int):
        """``num_epochs`` epochs from ``states`` (donated): (states, metrics)."""
        return self.chunk(states, self.betas, self.splits["train"], self.splits.get("val"),
                          num_epochs)


def build_trainer(config) -> Trainer:
    """Model, optimiser, mesh over all devices, split keys and the compiled chunk."""
    mesh = parallel.make_mesh(num_replicas(config))
    parallel.check_batch_divides(config.batch_size, mesh.shape)
    model, optimizer = models.build_model(config), make_optimizer(config)
    betas = parallel.put(replica_betas(config), parallel.replica_sharding(mesh))
    return Trainer(config, model, optimizer, mesh, split_keys_on(mesh, config), betas,
                   make_train_chunk(config, model, optimizer, mesh))


def chunk_epochs(config) -> int:
    """Epochs per compiled call: ~20 progress updates, never past a checkpoint."""
    return max(1, min(config.num_epochs // 20, config.checkpoint_every))


def epoch_record(epoch: int, metrics: dict[str, np.ndarray], num_pixels: int) -> dict:
    """A metrics.jsonl record from one epoch's per-seed metrics (nats per image in).

    Means over seeds under the plain keys; with several seeds, ``/std`` beside them and
    every seed's value under ``per_seed``; recon/kl/loss also per pixel.
    """
    record: dict[str, Any] = {"epoch": epoch}
    per_seed: dict[str, list[float]] = {}
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
                per_seed[key] = v.tolist()
    if per_seed:
        record["per_seed"] = per_seed
    return record


def sweep_record(epoch: int, metrics: dict[str, np.ndarray], num_pixels: int, config) -> dict:
    """``epoch_record`` over all replicas and, in a beta sweep, over each beta's seeds
    under ``beta_<b>/<key>``."""
    record = epoch_record(epoch, metrics, num_pixels)
    for b, beta in enumerate(config.sweep_betas):
        seeds = slice(b * config.num_seeds, (b + 1) * config.num_seeds)
        group = epoch_record(epoch, {k: np.asarray(v)[seeds] for k, v in metrics.items()},
                             num_pixels)
        record.update({f"beta_{beta:g}/{k}": v for k, v in group.items()
                       if k not in ("epoch", "per_seed")})
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
        append_json_line(self.path, record)


def append_json_line(path: Path, record: dict) -> None:
    """Appends ``record`` to a JSON-lines file as one line."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def running_counts(states: TrainState) -> dict[str, np.ndarray]:
    """The running counts [replicas] that ``states`` keeps, under their metric names."""
    counts = {"train/rollbacks": None if states.fallback is None else states.fallback.rollbacks,
              "train/restarts": states.restarts}
    return {name: np.asarray(jax.device_get(c)) for name, c in counts.items() if c is not None}


def count_rose(metrics: dict[str, np.ndarray], name: str,
               before: np.ndarray | None) -> np.ndarray:
    """[epochs, replicas]: whether the running count ``metrics[name]`` (``train/rollbacks``,
    ``train/restarts``) rose in each epoch of a chunk, from the counts ``before`` it
    [replicas] (all False where the run does not count it)."""
    loss = metrics["train/loss"]
    if name not in metrics:
        return np.zeros(loss.shape, bool)
    counts = np.asarray(metrics[name])
    chex.assert_shape(counts, loss.shape)
    return np.diff(counts, axis=0, prepend=before[None]) > 0


def first_nonfinite_epoch(metrics: dict[str, np.ndarray], params,
                          recovered: np.ndarray | None = None) -> int | None:
    """Index (within a chunk) of the first epoch whose train loss [epochs, seeds] is not
    finite, except where ``recovered`` [epochs, seeds] (rolled back or restarted); 0 if only the
    parameters are not finite; None if everything is finite."""
    finite = np.isfinite(metrics["train/loss"])
    finite_loss = (finite if recovered is None else finite | recovered).all(axis=1)
    if finite_loss.all() and bool(_all_finite(params)):
        return None
    return int(np.argmax(~finite_loss))


def _check_resumable(stored: dict, config, path: Path) -> None:
    current = checkpoints.config_to_json_dict(config)
    # A cosine schedule spans the run, so its length is part of the schedule.
    free = set(RESUMABLE_CHANGES) - ({"num_epochs"} if config.lr_schedule == "cosine" else set())
    diffs = sorted(k for k in set(stored) | set(current)
                   if k not in free and stored.get(k) != current.get(k))
    if diffs:
        raise UserError(f"{path} holds a run with a different config (fields: "
                        f"{', '.join(diffs)}); use another --workdir or the same config")


def load_checkpoint(path: str | Path, sharding=None, flag: str = "--ckpt"):
    """(config, stacked states, epoch, checkpoint dir) of a workdir or one step dir.

    States land on ``sharding`` (default: this process's first device), whatever the
    devices and processes that wrote them. Errors name ``flag``, the setting that gave
    the path.
    """
    ckpt_dir, epoch = checkpoints.locate(path, flag)
    mngr = checkpoints.manager(ckpt_dir, read_only=True)
    config = checkpoints.restore_config(mngr, epoch)
    validate_config(config)
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.eval_shape(lambda: init_states(config, models.build_model(config),
                                                  make_optimizer(config)))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)
    states = checkpoints.restore_states(mngr, epoch, abstract)
    mngr.close()
    return config, states, epoch, ckpt_dir


def load_init_params(config, states: TrainState, optimizer, mesh) -> TrainState:
    """``states`` with params from ``config.init_from`` (a workdir or step dir) for every
    replica, one to one when it has as many replicas, else its replica 0 copied to all;
    fresh optimiser state. With ``train_only_prior``, a learned prior of another shape
    than the source's (or where the source has none) keeps its fresh initialisation: a
    second stage that fits a new prior to a trained encoder and decoder."""
    source_config, source, _, _ = load_checkpoint(config.init_from, parallel.replicated(mesh),
                                                  flag="config.init_from")
    if config.train_only_prior and (
            num_replicas(source_config) != num_replicas(config)
            or source_config.first_replica != config.first_replica):
        raise UserError(f"config.train_only_prior refits the prior of each of the "
                        f"{num_replicas(source_config)} replica(s) of {config.init_from}: "
                        f"set --config.num_seeds={source_config.num_seeds} "
                        f"--config.first_replica={source_config.first_replica} (and the "
                        f"sweep_betas it had), not {num_replicas(config)} replica(s) from "
                        f"{config.first_replica}")
    first = lambda params: jax.tree_util.tree_map(lambda p: p[0], params)
    ours, theirs = first(states.params), first(source.params)
    fresh_prior = config.train_only_prior and not same_shapes(split_prior(ours)[0],
                                                              split_prior(theirs)[0])
    if not same_shapes(*(split_prior(p)[1] if fresh_prior else p for p in (ours, theirs))):
        raise UserError(f"config.init_from={config.init_from}: its model differs from this "
                        "config's model")
    if fresh_prior:
        say(f"The learned prior starts fresh: {config.init_from} has none of this shape")

    def with_params(states, params):
        if num_replicas(source_config) != num_replicas(config):
            params = jax.tree_util.tree_map(
                lambda p: jnp.broadcast_to(p[0], (num_replicas(config),) + p.shape[1:]),
                params)
        if fresh_prior:
            params = {"params": {**split_prior(params)[1], **split_prior(states.params)[0]}}
        return states.replace(params=params, opt_state=jax.vmap(optimizer.init)(params))

    return jax.jit(with_params, out_shardings=parallel.replica_sharding(mesh))(
        states, source.params)


NUM_ORDER_IMAGES = 16384  # fresh images whose codes give the dependency chain (1000 give
# chains that differ from draw to draw where dependences nearly tie; search log)


def chain_prior_order(config) -> tuple[int, ...]:
    """``analysis.dependency_chain`` of the posterior means that ``config.init_from``'s
    replica 0 gives NUM_ORDER_IMAGES fresh images (drawn with this run's key
    "prior_order"): an order for an autoregressive prior of its codes, with no labels."""
    source_config, source, _, _ = load_checkpoint(config.init_from, flag="config.init_from")
    name = config.data.name
    key = rng.replica_keys(config.seed, "prior_order", 1, config.first_replica)[0]
    images = data.draw_jit(name, data.split_keys(name, key, NUM_ORDER_IMAGES)).images
    encode = partial(models.encode_split, models.build_model(source_config),
                     batch_size=config.eval_batch_size)
    mu, _ = jax.jit(encode)(jax.tree_util.tree_map(lambda p: p[0], source.params), images)
    return analysis.dependency_chain(analysis.latent_dependence(mu))


def resolve_prior_order(config, workdir: Path):
    """``config``, or a copy whose ``model.prior_order`` = models.CHAIN_ORDER is replaced
    by the order it stands for: the one the run in ``workdir`` started with when there
    is one to resume, else ``chain_prior_order``."""
    if tuple(config.model.prior_order) != models.CHAIN_ORDER:
        return config
    epochs = checkpoints.saved_epochs(workdir / checkpoints.CHECKPOINT_DIR)
    if epochs:
        mngr = checkpoints.manager(workdir / checkpoints.CHECKPOINT_DIR, read_only=True)
        order = tuple(checkpoints.restore_config(mngr, epochs[-1]).model.prior_order)
        mngr.close()
        source = f"as the run in {workdir} started"
    else:
        order = chain_prior_order(config)
        source = f"the dependency chain of {config.init_from}'s codes"
    resolved = copy.deepcopy(config)
    resolved.model.prior_order = order
    say(f"config.model.prior_order = {order}: {source}")
    return resolved


def same_shapes(a, b) -> bool:
    """Whether two pytrees have the same structure and leaf shapes."""
    try:
        chex.assert_trees_all_equal_shapes(a, b)
    except (AssertionError, ValueError):
        return False
    return True


def start_states(config, trainer: Trainer, mngr) -> tuple[TrainState, int]:
    """(states, epochs done): the latest checkpoint in ``mngr`` if there is one, else a
    fresh (or init_from) start; sharded over the trainer's mesh."""
    states = trainer.fresh_states()
    latest = mngr.latest_step()
    if latest is not None:
        _check_resumable(checkpoints.config_to_json_dict(
            checkpoints.restore_config(mngr, latest)), config, mngr.directory / str(latest))
        states = checkpoints.restore_states(mngr, latest, states)
        say(f"Resuming from {mngr.directory / str(latest)} (epoch {latest})")
        return states, latest
    if config.init_from:
        states = load_init_params(config, states, trainer.optimizer, trainer.mesh)
        say(f"Initialised params from {config.init_from}")
    return states, 0


ENVIRONMENT_LOG = "environment.jsonl"


def record_environment(path: Path, start_epoch: int, mesh) -> None:
    """Appends one line per start or resume: the epoch it starts from, the UTC time and
    ``parallel.environment`` (a resume on other cores or versions continues correctly,
    but rounds differently from there on)."""
    append_json_line(path, {"start_epoch": start_epoch,
                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            **parallel.environment(mesh)})


def say(line: str) -> None:
    """A console line, from process 0 only."""
    if parallel.is_main_process():
        print(line, flush=True)


def train(config, workdir: str | Path, stop_at: int | None = None) -> TrainState:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns states.

    ``stop_at``: end after that many epochs, with a checkpoint, as an interruption there
    would (the run continues exactly when trained again without it).

    Runs on every device of every process (``parallel``); process 0 holds the workdir
    lock and writes config, logs and figures, every process writes its checkpoint shards.
    Raises Interrupted (after checkpointing) on SIGTERM/SIGINT, NonFiniteError on a
    non-finite loss or parameters, UserError on bad input or a workdir in use.
    """
    validate_config(config)
    workdir = Path(workdir)
    if config.init_from and not (workdir / checkpoints.CHECKPOINT_DIR).is_dir():
        checkpoints.locate(config.init_from, "config.init_from")  # before building data
    config = resolve_prior_order(config, workdir)
    trainer = build_trainer(config)
    mesh = trainer.mesh
    say(f"{num_replicas(config)} replica(s) on {mesh.devices.size} "
        f"{jax.devices()[0].platform} device(s): {mesh.shape[parallel.SEEDS]} for seeds "
        f"x {mesh.shape[parallel.DATA]} for data")
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir) if parallel.is_main_process() else contextlib.nullcontext()
    with lock, StopSignals() as stop:
        return _train_locked(config, workdir, stop, trainer, stop_at)


def _train_locked(config, workdir: Path, stop: StopSignals, trainer: Trainer,
                  stop_at: int | None) -> TrainState:
    main = parallel.is_main_process()
    num_pixels = math.prod(data.IMAGE_SHAPES[config.data.name])
    mngr = checkpoints.manager(workdir / checkpoints.CHECKPOINT_DIR, config.keep_checkpoints)
    best = (checkpoints.manager(workdir / checkpoints.BEST_DIR, 1,
                                keep_lowest=checkpoints.BEST_METRIC)
            if config.keep_best and "val" in trainer.splits else None)
    states, epoch = start_states(config, trainer, mngr)
    end = config.num_epochs if stop_at is None else min(stop_at, config.num_epochs)
    if main:
        (workdir / "config.json").write_text(
            json.dumps(checkpoints.config_to_json_dict(config), indent=2))
        record_environment(workdir / ENVIRONMENT_LOG, epoch, trainer.mesh)
        log = MetricsLog(workdir / "metrics.jsonl", epoch)
        progress = Progress(end, epoch)
    last_saved = mngr.latest_step()
    counts = running_counts(states)
    while epoch < end:
        n = min(chunk_epochs(config), end - epoch)
        states, metrics = trainer.run(states, n)
        metrics = jax.device_get(metrics)
        back, restarted = (count_rose(metrics, name, counts.get(name))
                           for name in ("train/rollbacks", "train/restarts"))
        counts = {name: metrics[name][-1] for name in counts}
        bad = first_nonfinite_epoch(metrics, states.params, back | restarted)
        if bad is not None:
            raise NonFiniteError(
                f"non-finite loss or parameters in epochs {epoch}..{epoch + n - 1} (first bad "
                f"epoch {epoch + bad}); last good checkpoint: "
                f"{mngr.directory / str(last_saved) if last_saved is not None else 'none'}. "
                f"If training diverged, lower config.learning_rate, clip gradients "
                f"(config.grad_clip_norm, now {config.grad_clip_norm}) or roll back bad "
                f"epochs (config.rollback_tolerance, now {config.rollback_tolerance})")
        for i in range(n):
            for r in np.flatnonzero(back[i]):
                say(f"Epoch {epoch + i}: replica {r} rolled back to its best state (val loss "
                    f"{metrics['val/loss'][i, r]:.2f} nats per image; non-finite, or above "
                    f"1 + config.rollback_tolerance = {1 + config.rollback_tolerance:g} "
                    f"times its best for config.rollback_patience = "
                    f"{config.rollback_patience} epochs)")
            for r in np.flatnonzero(restarted[i]):
                say(f"Epoch {epoch + i}: replica {r} restarted from fresh parameters (val "
                    f"loss {metrics['val/loss'][i, r]:.2f} nats per image, above "
                    f"config.restart_above = {config.restart_above:g})")
            if main and should_log(epoch + i, config):
                record = sweep_record(epoch + i, {k: v[i] for k, v in metrics.items()},
                                      num_pixels, config)
                print(console_line(record), flush=True)
                log.write(record)
        epoch += n
        stopping = parallel.any_process(stop.requested is not None)
        crossed = epoch // config.checkpoint_every > (epoch - n) // config.checkpoint_every
        if crossed or epoch == end or stopping:
            checkpoints.save(mngr, epoch, states, config)
            last_saved = epoch
            if best is not None:
                val_loss = float(np.mean(metrics["val/loss"][-1]) / num_pixels)
                checkpoints.save(best, epoch, states, config, {checkpoints.BEST_METRIC: val_loss})
        if main:
            progress.update(epoch)
        if stopping and epoch < end:
            _close(mngr, best)
            raise Interrupted(f"stopped at epoch {epoch} of {config.num_epochs}; checkpoint "
                              f"{mngr.directory / str(epoch)}. Resume with the same command")
    _close(mngr, best)
    if main:
        plotting.training_curves(log.path, workdir / "figures" / "training_curves.png")
    return states


def _close(*managers) -> None:
    for mngr in managers:
        if mngr is not None:
            mngr.close()
