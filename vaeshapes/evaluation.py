"""Test metrics and figures for a checkpoint; the config travels with the checkpoint."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaeshapes import analysis, checkpoints, data, elbo, models, plotting, rng, training
from vaeshapes.validation import validate_config

TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 7)


def load_run(ckpt: str | Path):
    """(config, stacked states, epoch, checkpoint dir) for a workdir or step dir."""
    ckpt_dir, epoch = checkpoints.locate(ckpt)
    mngr = checkpoints.manager(ckpt_dir, read_only=True)
    config = checkpoints.restore_config(mngr, epoch)
    validate_config(config)
    model = models.build_model(config)
    abstract = jax.eval_shape(lambda: training.init_states(
        config, model, training.make_optimizer(config)))
    states = checkpoints.restore_states(mngr, epoch, abstract)
    mngr.close()
    return config, states, epoch, ckpt_dir


def image_metrics(params, x: jax.Array, key: jax.Array, *, config, model) -> dict:
    """Scalar metrics of one test image x (no batch axis)."""
    xb = x[None]
    mu, logvar = model.apply(params, xb, method="encode")
    z = elbo.reparameterize(key, mu, logvar)
    logits_z = model.apply(params, z, method="decode")
    logits_mu = model.apply(params, mu, method="decode")
    likelihood = training.likelihood_name(config)
    recon = -elbo.log_likelihood(likelihood, logits_z, xb)[0]
    if likelihood == "categorical":
        correct = jnp.argmax(logits_mu[0], axis=-1) == x
    else:
        correct = (logits_mu[0] > 0) == (x > 0.5)
    return dict(recon=recon, kl=elbo.kl_divergence(mu, logvar)[0],
                pixel_accuracy=correct.mean(), exact_match=correct.all())


def test_metrics(params, images: jax.Array, key: jax.Array, *, config, model) -> dict:
    """Means over ``images`` of ``image_metrics`` (compiled in batches)."""
    keys = jax.random.split(key, images.shape[0])
    one = partial(image_metrics, params, config=config, model=model)
    per_image = jax.lax.map(lambda a: one(*a), (images, keys),
                            batch_size=config.eval_batch_size)
    return {k: v.astype(jnp.float32).mean() for k, v in per_image.items()}


def named_metrics(raw: dict, num_pixels: int) -> dict:
    """Per-seed arrays of raw test metrics -> the public metric names."""
    out = {
        "test/recon_nats_per_image": raw["recon"],
        "test/kl_nats_per_image": raw["kl"],
        "test/recon_per_pixel": raw["recon"] / num_pixels,
        "test/kl_per_pixel": raw["kl"] / num_pixels,
        "test/neg_elbo_nats_per_image": raw["recon"] + raw["kl"],
        "test/exact_match": raw["exact_match"],
        "test/pixel_accuracy": raw["pixel_accuracy"],
    }
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def summarise(per_seed: dict[str, np.ndarray]) -> dict:
    """Mean over seeds under each key, ``<key>/std`` beside it, and a ``per_seed`` dict."""
    out = {}
    for k, v in per_seed.items():
        out[k] = float(v.mean())
        out[f"{k}/std"] = float(v.std())
    out["per_seed"] = {k: [float(x) for x in v] for k, v in per_seed.items()}
    return out


def draw_figures(config, params, splits, outdir: Path, workdir: Path, key: jax.Array) -> None:
    """Training curves, reconstructions, prior samples and a latent traversal (one replica)."""
    model = models.build_model(config)
    decode = jax.jit(lambda z: analysis.display_images(
        model.apply(params, z, method="decode")))
    encode = jax.jit(lambda x: model.apply(params, x, method="encode")[0])
    if (workdir / "metrics.jsonl").exists():
        plotting.training_curves(workdir / "metrics.jsonl", outdir / "training_curves.png")
    x = splits["test"].images[:8]
    mu = encode(x)
    plotting.image_grid(np.stack([np.asarray(x), np.asarray(decode(mu))]),
                        outdir / "reconstructions.png", "test inputs (top) and "
                        "reconstructions from the posterior mean (bottom)",
                        row_labels=["input", "recon"])
    z_prior = jax.random.normal(key, (32, config.latent_dim))
    samples = np.asarray(decode(z_prior)).reshape(4, 8, *x.shape[1:])
    plotting.image_grid(samples, outdir / "prior_samples.png", "decoded samples z ~ N(0, I)")
    latents = analysis.traversal_latents(mu[0], jnp.asarray(TRAVERSAL_VALUES, jnp.float32))
    d, v = latents.shape[:2]
    grid = np.asarray(decode(latents.reshape(d * v, d))).reshape(d, v, *x.shape[1:])
    plotting.image_grid(grid, outdir / "latent_traversal.png",
                        "each latent dimension swept over [-3, 3], others at a test "
                        "image's posterior mean",
                        row_labels=[f"z{i}" for i in range(d)],
                        col_labels=[f"{t:+.0f}" for t in TRAVERSAL_VALUES])


def evaluate(ckpt: str | Path, outdir: str | Path | None = None) -> dict:
    """Evaluates a checkpoint: writes ``metrics.json`` and figures to ``outdir``."""
    config, states, epoch, ckpt_dir = load_run(ckpt)
    workdir = ckpt_dir.parent
    outdir = Path(outdir) if outdir else workdir / "eval"
    outdir.mkdir(parents=True, exist_ok=True)
    splits = data.build_splits(config.data, rng.purpose_key(config.seed, "data"))
    model = models.build_model(config)
    eval_key = rng.purpose_key(config.seed, "eval")
    per_seed_fn = jax.jit(jax.vmap(
        partial(test_metrics, config=config, model=model), in_axes=(0, None, None)))
    raw = jax.device_get(per_seed_fn(states.params, splits["test"].images,
                                     jax.random.fold_in(eval_key, 0)))
    num_pixels = math.prod(data.IMAGE_SHAPES[config.data.name])
    metrics = {"checkpoint": str(ckpt_dir / str(epoch)), "epoch": epoch,
               "num_seeds": config.num_seeds,
               "num_params": models.count_params(
                   jax.tree_util.tree_map(lambda p: p[0], states.params))}
    floor = data.entropy_floor_nats(config.data)
    if floor is not None:
        metrics["test/entropy_floor_nats_per_image"] = floor
    metrics.update(summarise(named_metrics(raw, num_pixels)))
    params0 = jax.tree_util.tree_map(lambda p: p[0], states.params)
    draw_figures(config, params0, splits, outdir, workdir, jax.random.fold_in(eval_key, 1))
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
