"""Config validation before anything compiles; one-line errors that name the field."""

from __future__ import annotations

import math

from vaeshapes import data, models


class UserError(Exception):
    """A problem with the user's input; the CLIs print it as one line and exit 2."""


def _get(config, field: str):
    node = config
    for part in field.split("."):
        if part not in node:
            raise UserError(f"config.{field} is missing")
        node = node[part]
    return node


def _check_int(config, field: str, low: int, high: float = math.inf) -> None:
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        allowed = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise UserError(f"config.{field} = {value!r}: must be an integer {allowed}")


def _check_float(config, field: str, low: float, *, strict: bool = False) -> None:
    value = _get(config, field)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > low if strict else value >= low))
    if not ok:
        raise UserError(f"config.{field} = {value!r}: must be a finite number "
                        f"{'>' if strict else '>='} {low}")


LR_SCHEDULES = ("constant", "cosine")

# Every field a config may have; anything else is a typo or a stale field.
KNOWN_FIELDS = {
    "": {"name", "seed", "num_seeds", "first_replica", "num_epochs", "batch_size", "learning_rate",
         "latent_dim", "beta", "sweep_betas", "latent_noise_std", "info_noise_std", "log_every",
         "checkpoint_every", "keep_checkpoints", "keep_best", "init_from", "eval_batch_size",
         "kl_warmup_epochs", "free_bits", "lr_schedule", "lr_warmup_epochs", "grad_clip_norm",
         "train_importance_samples", "train_elbo_encoder", "train_only_prior", "rollback_tolerance",
         "rollback_patience", "restart_above", "restart_every", "select_candidates",
         "select_at_epoch", "select_window_epochs",
         "data", "model"},
    "data": {"name", "num_train", "num_val", "num_test", "stream"},
    "model": {"num_classes", "embed_dim", "encoder_convs", "encoder_dense",
              "decoder_input_shape", "decoder_dense_relu", "decoder_convs", "conv_impl",
              "decoder_dense", "prior_components", "prior_type", "prior_hidden",
              "prior_fourier_features", "prior_fourier_scale", "prior_order"},
}


def _check_known_fields(config) -> None:
    for group, known in KNOWN_FIELDS.items():
        node = _get(config, group) if group else config
        for key in node.keys():
            if key not in known:
                prefix = f"{group}." if group else ""
                raise UserError(f"config.{prefix}{key}: unknown field; known: "
                                f"{', '.join(sorted(known))}")


def validate_config(config) -> None:
    """Raises UserError naming the first bad field; returns None if the config is usable."""
    _check_known_fields(config)
    for field in ("num_epochs", "batch_size", "latent_dim", "log_every",
                  "checkpoint_every", "keep_checkpoints", "num_seeds", "eval_batch_size",
                  "data.num_train", "data.num_test"):
        _check_int(config, field, 1)
    _check_int(config, "seed", 0, 2**31 - 1)
    _check_int(config, "data.num_val", 0)
    _check_int(config, "first_replica", 0, 2**30)
    _check_int(config, "kl_warmup_epochs", 0)
    _check_int(config, "lr_warmup_epochs", 0)
    _check_int(config, "model.prior_components", 0)
    _check_float(config, "free_bits", 0.0)
    if config.free_bits and config.model.prior_components:
        raise UserError(f"config.free_bits = {config.free_bits} needs the KL per latent "
                        f"dimension, which the learned prior of config.model.prior_components "
                        f"= {config.model.prior_components} does not have; set one to 0")
    if _get(config, "train_only_prior") is True and not (config.model.prior_components
                                                         and config.init_from):
        raise UserError("config.train_only_prior = True refits the learned prior of a "
                        "trained model: it needs config.model.prior_components > 0 and "
                        "config.init_from (that model's workdir)")
    _check_float(config, "grad_clip_norm", 0.0)
    _check_float(config, "rollback_tolerance", 0.0)
    _check_int(config, "rollback_patience", 1)
    _check_float(config, "restart_above", 0.0)
    _check_int(config, "restart_every", 1)
    for field in ("rollback_tolerance", "restart_above"):
        if config[field] and not config.data.num_val:
            raise UserError(f"config.{field} = {config[field]} compares validation losses: "
                            f"it needs a validation split (config.data.num_val > 0)")
    _check_importance_samples(config)
    _check_selection(config)
    _check_float(config, "learning_rate", 0.0, strict=True)
    _check_float(config, "beta", 0.0)
    _check_sweep_betas(config)
    _check_float(config, "latent_noise_std", 0.0)
    _check_float(config, "info_noise_std", 0.0, strict=True)
    name = _get(config, "data.name")
    if name not in data.GENERATORS:
        raise UserError(f"config.data.name = {name!r}: must be one of {sorted(data.GENERATORS)}")
    if config.batch_size > config.data.num_train:
        raise UserError(f"config.batch_size = {config.batch_size} is larger than the train "
                        f"split (config.data.num_train = {config.data.num_train})")
    want_classes = data.NUM_CLASSES[name]
    if _get(config, "model.num_classes") != want_classes:
        raise UserError(f"config.model.num_classes = {config.model.num_classes}: dataset "
                        f"{name!r} needs {want_classes} (0 means binary pixels)")
    if want_classes:
        _check_int(config, "model.embed_dim", 1)
    impl = _get(config, "model.conv_impl")
    if impl not in models.CONV_IMPLS:
        raise UserError(f"config.model.conv_impl = {impl!r}: must be one of "
                        f"{', '.join(models.CONV_IMPLS)}")
    prior_type = _get(config, "model.prior_type")
    if prior_type not in models.PRIOR_TYPES:
        raise UserError(f"config.model.prior_type = {prior_type!r}: must be one of "
                        f"{', '.join(models.PRIOR_TYPES)}")
    for field in ("model.encoder_dense", "model.decoder_dense", "model.prior_hidden"):
        _check_widths(config, field)
    _check_int(config, "model.prior_fourier_features", 0)
    _check_float(config, "model.prior_fourier_scale", 0.0, strict=True)
    if config.model.prior_fourier_features:
        _require_autoregressive_prior(config, "model.prior_fourier_features",
                                      "feeds the autoregressive prior's MLPs")
    _check_prior_order(config)
    _check_decoder_output(config)
    for field in ("keep_best", "data.stream", "train_elbo_encoder", "train_only_prior"):
        if not isinstance(_get(config, field), bool):
            raise UserError(f"config.{field} = {_get(config, field)!r}: must be True or False")
    schedule = _get(config, "lr_schedule")
    if schedule not in LR_SCHEDULES:
        raise UserError(f"config.lr_schedule = {schedule!r}: must be one of {LR_SCHEDULES}")
    if not isinstance(_get(config, "init_from"), str):
        raise UserError(f"config.init_from = {config.init_from!r}: must be a path string")


def _check_sweep_betas(config) -> None:
    betas = _get(config, "sweep_betas")
    ok = isinstance(betas, (tuple, list)) and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b >= 0
        for b in betas)
    if not ok or len(set(betas)) != len(betas):
        raise UserError(f"config.sweep_betas = {betas!r}: must be a tuple of distinct finite "
                        "numbers >= 0 (empty: no sweep, every replica uses config.beta)")


def _check_selection(config) -> None:
    _check_int(config, "select_candidates", 1, 2**31 - config.seed)
    _check_int(config, "select_at_epoch", 1)
    _check_int(config, "select_window_epochs", 1)
    if config.select_candidates == 1:
        return
    n = f"config.select_candidates = {config.select_candidates}"
    if config.num_seeds > 1 or config.sweep_betas:
        raise UserError(f"{n} picks one seed of single-replica runs: it needs "
                        "config.num_seeds = 1 and no config.sweep_betas")
    if not config.data.num_val:
        raise UserError(f"{n} compares validation losses: it needs a validation split "
                        "(config.data.num_val > 0)")
    if config.select_at_epoch >= config.num_epochs:
        raise UserError(f"config.select_at_epoch = {config.select_at_epoch} must come before "
                        f"the end of the run (config.num_epochs = {config.num_epochs})")
    if not config.log_every <= config.select_window_epochs <= config.select_at_epoch:
        raise UserError(f"config.select_window_epochs = {config.select_window_epochs}: must "
                        f"hold a logged val loss (>= config.log_every = {config.log_every}) "
                        f"and end at config.select_at_epoch = {config.select_at_epoch}")


def _check_importance_samples(config) -> None:
    _check_int(config, "train_importance_samples", 1)
    if _get(config, "train_elbo_encoder") is True and config.train_importance_samples == 1:
        raise UserError("config.train_elbo_encoder = True needs "
                        "config.train_importance_samples > 1 (the decoder's IWAE bound)")
    if config.train_importance_samples > 1:
        for field in ("free_bits", "latent_noise_std"):
            if _get(config, field):
                raise UserError(f"config.train_importance_samples = "
                                f"{config.train_importance_samples} trains on the IWAE bound, "
                                f"which has no config.{field}; set one of them to its default")


def _check_widths(config, field: str) -> None:
    widths = _get(config, field)
    ok = isinstance(widths, (tuple, list)) and all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    if not ok:
        raise UserError(f"config.{field} = {widths!r}: must be a tuple of layer widths, "
                        "integers >= 1 (empty: no such layers)")


def _check_prior_order(config) -> None:
    order = _get(config, "model.prior_order")
    if not isinstance(order, (tuple, list)):
        raise UserError(f"config.model.prior_order = {order!r}: must be a tuple")
    if not order:
        return
    if tuple(order) == models.CHAIN_ORDER:
        _check_chain_order(config)
        return
    if sorted(order) != list(range(config.latent_dim)):
        raise UserError(f"config.model.prior_order = {tuple(order)!r}: must be a permutation "
                        f"of 0..{config.latent_dim - 1} (config.latent_dim = "
                        f"{config.latent_dim}), () for that order, or ('chain',)")
    _require_autoregressive_prior(config, "model.prior_order", "orders the autoregressive prior")


def _check_chain_order(config) -> None:
    _require_autoregressive_prior(config, "model.prior_order", "orders the autoregressive prior")
    field = f"config.model.prior_order = {models.CHAIN_ORDER!r}"
    if not config.init_from:
        raise UserError(f"{field} orders the prior by the codes of a trained model: it needs "
                        "config.init_from (that model's workdir)")
    if config.num_seeds > 1 or config.sweep_betas or config.select_candidates > 1:
        raise UserError(f"{field} gives one order per run: set config.num_seeds = 1 (and "
                        "config.first_replica = k for replica k), no config.sweep_betas and "
                        "config.select_candidates = 1")


def _require_autoregressive_prior(config, field: str, what: str) -> None:
    if not (config.model.prior_components and config.model.prior_type == "autoregressive"):
        raise UserError(f"config.{field} = {_get(config, field)!r} {what}: it needs "
                        f"config.model.prior_type = 'autoregressive' and "
                        f"config.model.prior_components > 0")


def _check_decoder_output(config) -> None:
    """The decoder's strides must bring decoder_input_shape back to the image size."""
    h, w, _ = _get(config, "model.decoder_input_shape")
    scale = math.prod(stride for _, stride in _get(config, "model.decoder_convs"))
    want = data.IMAGE_SHAPES[config.data.name]
    if (h * scale, w * scale) != tuple(want):
        raise UserError(f"config.model.decoder_input_shape = {(h, w)} with decoder strides "
                        f"{scale}x gives {(h * scale, w * scale)} images; the data is {want}")
