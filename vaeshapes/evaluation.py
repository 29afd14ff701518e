"""Test metrics and figures for a checkpoint; the config travels with the checkpoint."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaeshapes import analysis, data, elbo, models, plotting, rng, training

TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 7)
MANIFOLD_VALUES = np.linspace(-1.5, 1.5, 10)  # the source's 2-D manifold grid
KERAS_EPS = 1e-7  # Keras clips probabilities to [eps, 1 - eps] in its BCE


def info_noise_std(config) -> float:
    """sigma_n of the channel: the training noise, or config.info_noise_std without one."""
    return config.latent_noise_std or config.info_noise_std


def clipped_bce_per_pixel(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Source 003's test BCE: mean over pixels, probabilities clipped as Keras does."""
    p = jnp.clip(jax.nn.sigmoid(logits), KERAS_EPS, 1.0 - KERAS_EPS)
    return -jnp.mean(x * jnp.log(p) + (1.0 - x) * jnp.log(1.0 - p))


def image_metrics(params, x: jax.Array, key: jax.Array, *, config, model) -> dict:
    """Metrics of one test image x (no batch axis), and its encoding (mu, logvar, z)."""
    xb = x[None]
    mu, logvar = model.apply(params, xb, method="encode")
    z = elbo.reparameterize(key, mu, logvar)
    logits_z = model.apply(params, z, method="decode")
    logits_mu = model.apply(params, mu, method="decode")
    likelihood = training.likelihood_name(config)
    out = dict(recon=-elbo.log_likelihood(likelihood, logits_z, xb)[0],
               kl_per_dim=elbo.kl_per_dim(mu, logvar)[0], mu=mu[0], logvar=logvar[0], z=z[0])
    if likelihood == "categorical":
        correct = jnp.argmax(logits_mu[0], axis=-1) == x
    else:
        correct = (logits_mu[0] > 0) == (x > 0.5)
        out["bce"] = clipped_bce_per_pixel(logits_z[0], x)
        out["bce_mean_z"] = clipped_bce_per_pixel(logits_mu[0], x)
    out.update(pixel_accuracy=correct.mean(), exact_match=correct.all().astype(jnp.float32))
    return out


def seed_metrics(params, images: jax.Array, key: jax.Array, *, config, model) -> dict:
    """Every test metric of one replica, under its public name (scalars or [D] arrays)."""
    keys = jax.random.split(key, images.shape[0])
    one = partial(image_metrics, params, config=config, model=model)
    per_image = jax.lax.map(lambda a: one(*a), (images, keys),
                            batch_size=config.eval_batch_size)
    mean = {k: v.mean(axis=0) for k, v in per_image.items()}
    num_pixels = math.prod(images.shape[1:3])
    kl = mean["kl_per_dim"].sum()
    out = {
        "test/recon_nats_per_image": mean["recon"],
        "test/kl_nats_per_image": kl,
        "test/recon_per_pixel": mean["recon"] / num_pixels,
        "test/kl_per_pixel": kl / num_pixels,
        "test/neg_elbo_nats_per_image": mean["recon"] + kl,
        "test/exact_match": mean["exact_match"],
        "test/pixel_accuracy": mean["pixel_accuracy"],
    }
    if "bce" in mean:
        out["test/bce_per_pixel"] = mean["bce"]
        out["test/bce_per_pixel_mean_z"] = mean["bce_mean_z"]
    info = analysis.information_bits(per_image["mu"], per_image["logvar"], per_image["z"],
                                     info_noise_std(config))
    out.update({f"info/{k}": v for k, v in info.items()})
    out["info/kl_bits"] = kl / jnp.log(2.0)
    out["info/kl_per_dim_bits"] = mean["kl_per_dim"] / jnp.log(2.0)
    return out


def summarise(per_seed: dict[str, np.ndarray]) -> dict:
    """Mean over seeds (axis 0) under each key, ``<key>/std`` beside it, ``per_seed`` lists."""
    out = {}
    for k, v in per_seed.items():
        v = np.asarray(v, np.float64)
        out[k] = v.mean(axis=0).tolist()
        out[f"{k}/std"] = v.std(axis=0).tolist()
    out["per_seed"] = {k: np.asarray(v, np.float64).tolist() for k, v in per_seed.items()}
    return out


def draw_figures(config, params, splits, outdir: Path, workdir: Path, key: jax.Array,
                 per_dim_bits_mu: np.ndarray) -> None:
    """Every figure of one replica: curves, reconstructions, samples, traversal, manifold
    grids, latent scatter and bits per dimension."""
    model = models.build_model(config)
    decode = jax.jit(lambda z: analysis.display_images(
        model.apply(params, z, method="decode")))
    encode = jax.jit(lambda x: model.apply(params, x, method="encode")[0])
    test = splits["test"]
    shape = test.images.shape[1:]
    d = config.latent_dim

    def decode_grid(latents):
        rows, cols = latents.shape[:2]
        return np.asarray(decode(latents.reshape(rows * cols, d))).reshape(rows, cols, *shape)

    if (workdir / "metrics.jsonl").exists():
        plotting.training_curves(workdir / "metrics.jsonl", outdir / "training_curves.png")
    mu = np.asarray(encode(test.images[: config.eval_batch_size]))
    x = test.images[:8]
    plotting.image_grid(np.stack([np.asarray(x), np.asarray(decode(mu[:8]))]),
                        outdir / "reconstructions.png", "test inputs (top) and "
                        "reconstructions from the posterior mean (bottom)",
                        row_labels=["input", "recon"])
    z_prior = jax.random.normal(key, (4, 8, d))
    plotting.image_grid(decode_grid(z_prior), outdir / "prior_samples.png",
                        "decoded samples z ~ N(0, I)")
    latents = analysis.traversal_latents(jnp.asarray(mu[0]),
                                         jnp.asarray(TRAVERSAL_VALUES, jnp.float32))
    plotting.image_grid(decode_grid(latents), outdir / "latent_traversal.png",
                        "each latent dimension swept over [-3, 3], others at a test "
                        "image's posterior mean", row_labels=[f"z{i}" for i in range(d)],
                        col_labels=[f"{t:+.0f}" for t in TRAVERSAL_VALUES])
    top2 = tuple(analysis.most_informative_dims(jnp.asarray(per_dim_bits_mu)))
    grid_values = jnp.asarray(MANIFOLD_VALUES, jnp.float32)
    for dims, name in (((0, 1), "manifold_z0_z1.png"), (top2, "manifold_top2.png")):
        plotting.image_grid(
            decode_grid(analysis.grid_latents(d, dims, grid_values)), outdir / name,
            f"decoded grid over z{dims[0]} (rows) and z{dims[1]} (columns) in "
            "[-1.5, 1.5], other dims 0",
            row_labels=[f"{v:+.1f}" for v in MANIFOLD_VALUES],
            col_labels=[f"{v:+.1f}" for v in MANIFOLD_VALUES])
    factor, names = data.LABELS[config.data.name]
    labels = np.asarray(test.factors[factor][: mu.shape[0]])
    plotting.latent_scatter(mu[:, list(top2)], labels, names, top2,
                            outdir / "latent_scatter.png",
                            colours=plotting.RECT_PALETTE if config.data.name == "rect" else None)


def evaluate(ckpt: str | Path, outdir: str | Path | None = None) -> dict:
    """Evaluates a checkpoint: writes ``metrics.json`` and figures to ``outdir``."""
    config, states, epoch, ckpt_dir = training.load_checkpoint(ckpt)
    workdir = ckpt_dir.parent
    outdir = Path(outdir) if outdir else workdir / "eval"
    outdir.mkdir(parents=True, exist_ok=True)
    splits = data.build_splits(config.data, rng.purpose_key(config.seed, "data"))
    model = models.build_model(config)
    eval_key = rng.purpose_key(config.seed, "eval")
    per_seed_fn = jax.jit(jax.vmap(partial(seed_metrics, config=config, model=model),
                                   in_axes=(0, None, None)))
    per_seed = jax.device_get(per_seed_fn(states.params, splits["test"].images,
                                          jax.random.fold_in(eval_key, 0)))
    params0 = jax.tree_util.tree_map(lambda p: p[0], states.params)
    metrics = {"checkpoint": str(ckpt_dir / str(epoch)), "epoch": epoch,
               "num_seeds": config.num_seeds, "num_params": models.count_params(params0),
               "info/noise_std": info_noise_std(config)}
    floor = data.entropy_floor_nats(config.data)
    if floor is not None:
        metrics["test/entropy_floor_nats_per_image"] = floor
    metrics.update(summarise(per_seed))
    draw_figures(config, params0, splits, outdir, workdir, jax.random.fold_in(eval_key, 1),
                 per_seed["info/per_dim_bits_mu"][0])
    plotting.bits_per_dim(
        {"source estimate Var(z)": per_seed["info/per_dim_bits"][0],
         "Var(mu) / (E[sigma^2] + sigma_n^2)": per_seed["info/per_dim_bits_mu"][0],
         "KL (upper bound)": per_seed["info/kl_per_dim_bits"][0]},
        outdir / "bits_per_dim.png",
        f"information per latent dimension (seed 0, sigma_n = {info_noise_std(config)})")
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
