"""Test metrics and figures for a checkpoint; the config travels with the checkpoint."""

from __future__ import annotations

import csv
import json
import math
from functools import partial
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vaeshapes import analysis, checkpoints, data, elbo, models, parallel, plotting, rng, training
from vaeshapes.validation import UserError

TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 7)
MANIFOLD_VALUES = np.linspace(-1.5, 1.5, 10)  # the source's 2-D manifold grid
KERAS_EPS = 1e-7  # Keras clips probabilities to [eps, 1 - eps] in its BCE
PROBE_KS = (1, 5, 10)  # labelled examples per class for the few-label probes
PROBE_DRAWS = 10  # random draws of the labelled examples, averaged
NUM_PRIOR_SAMPLES = 1000
VAL_KEY = "val/neg_elbo_nats_per_image"
VAL_DRAWS = 16  # draws of z per validation image, averaged (one: sd ~0.07 nats on rect_best)
SELECTED_PREFIXES = ("test/", "prior/", "posterior/")  # what best_val/ reports
EDIT_DELTAS = np.linspace(-2.0, 2.0, 9)  # added to the edited dimension
NUM_EDITED = 32  # test images whose edits enter latent/edit_spearman
ACTIVE_VAR = 0.01  # a dimension is active when Var(mu_d) over the test set exceeds this
INTERPOLATION_STEPS = 10
# Importance samples K of the IWAE bound on test log-likelihood, per dataset (eval.py
# --iwae_ks overrides): each K costs K decoder passes per test image.
IWAE_KS = {"rect": (1, 100, 1000), "shapes": (1, 10)}
IWAE_CHUNK = 100  # importance samples decoded together
IWAE_DECODES = 2000  # decoder passes per compiled step (images x chunk), bounds memory
# Metrics indexed by factor ([F] per seed), and metrics indexed by latent dimension, which
# are reported for seed 0 only (dimension i of one seed has nothing to do with another's).
FACTOR_KEYS = ("latent/factor_score", "latent/mig_per_factor", "latent/factor_entropy_nats")
DIMENSION_KEYS = ("latent/factor_dim", "latent/edit_dim", "latent/association",
                  "latent/mutual_info_nats", "latent/dim_dependence_nats")


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
               kl=elbo.kl_to_prior(model, params, z, mu, logvar)[0], mu=mu[0],
               logvar=logvar[0], z=z[0])
    if not model.prior_components:
        out["kl_per_dim"] = elbo.kl_per_dim(mu, logvar)[0]
    if likelihood == "categorical":
        correct = jnp.argmax(logits_mu[0], axis=-1) == x
    else:
        correct = (logits_mu[0] > 0) == (x > 0.5)
        out["bce"] = clipped_bce_per_pixel(logits_z[0], x)
        out["bce_mean_z"] = clipped_bce_per_pixel(logits_mu[0], x)
    out.update(pixel_accuracy=correct.mean(), exact_match=correct.all().astype(jnp.float32))
    return out


def factor_matrix(split: data.Split, name: str) -> jax.Array:
    """The analysed factors of a split as floats [N, F] (order: data.ANALYSIS_FACTORS)."""
    return jnp.stack([split.factors[f].astype(jnp.float32) for f in data.ANALYSIS_FACTORS[name]],
                     axis=1)


def factor_num_values(name: str) -> tuple[int, ...]:
    """Per analysed factor: its number of values if categorical (the label), else 0."""
    label, names = data.LABELS[name]
    return tuple(len(names) if f == label else 0 for f in data.ANALYSIS_FACTORS[name])


def probe_labels(split: data.Split, name: str) -> jax.Array:
    """The label factor of a split as probe classes [N] in [0, number of values)."""
    first, _ = data.LABEL_VALUES[name]
    return split.factors[data.LABELS[name][0]] - first


def probe_metrics(key: jax.Array, features: jax.Array, labels: jax.Array, name: str,
                  suffix: str = "") -> dict:
    """Few-label probe accuracies: labelled examples drawn from the first half of the test
    set, accuracy on the second half, for every k in PROBE_KS."""
    chex.assert_rank(features, 2)
    half = features.shape[0] // 2
    num_classes = data.LABEL_VALUES[name][1]
    factor = data.LABELS[name][0]
    return {f"probe/{factor}_acc_k{k}{suffix}": analysis.probe_accuracy(
        key, features[:half], labels[:half], features[half:], labels[half:], num_classes, k,
        PROBE_DRAWS) for k in PROBE_KS}


def edit_sign(mu: jax.Array, factors: jax.Array, name: str, dim: jax.Array) -> jax.Array:
    """+1 or -1: the sign of the edited dimension's correlation with the edited factor, so
    that a sweep of sign * delta should grow the factor (0 if they are uncorrelated)."""
    edited = data.ANALYSIS_FACTORS[name].index(data.EDIT_FACTOR[name])
    return jnp.sign(analysis.pearson(mu, factors[:, edited])[dim])


def round_trip(params, images: jax.Array, *, model) -> jax.Array:
    """What one encode-decode round trip (through the posterior mean) makes of displayed
    images: class images [N, H, W], or pixel probabilities [N, H, W, 1], thresholded at
    0.5 before encoding; returns displayed images of the same shape."""
    chex.assert_rank(images, {3, 4})
    encoded = (images > 0.5).astype(jnp.float32) if images.ndim == 4 else images
    mu, _ = model.apply(params, encoded, method="encode")
    out = analysis.display_images(model.apply(params, mu, method="decode"))
    chex.assert_shape(out, images.shape)
    return out


def latent_metrics(params, mu: jax.Array, z: jax.Array, test: data.Split, key: jax.Array,
                   probe_key: jax.Array, *, config, model,
                   prior_samples: int = NUM_PRIOR_SAMPLES) -> dict:
    """Factor association, MIG, active dims, constant-norm editing, the validity of
    ``prior_samples`` prior samples drawn with ``key`` (also after one ``round_trip``) and
    of the test set's posterior samples z [N, D] decoded, and few-label probes
    (``probe_key``) of one replica, from the test set's posterior means mu [N, D]."""
    chex.assert_rank(mu, 2)
    chex.assert_equal_shape([mu, z])
    name = config.data.name
    factors = factor_matrix(test, name)
    association = analysis.association_matrix(mu, factors, factor_num_values(name))
    mi, entropy = analysis.mutual_info_matrix(mu, factors)
    gap = analysis.mutual_info_gap(mi, entropy)
    factor_dim = jnp.argmax(association, axis=1)
    edited = data.ANALYSIS_FACTORS[name].index(data.EDIT_FACTOR[name])
    dim = factor_dim[edited]
    sign = edit_sign(mu, factors, name, dim)
    decode = lambda z: analysis.display_images(model.apply(params, z, method="decode"))
    deltas = jnp.asarray(EDIT_DELTAS, jnp.float32)
    latents = analysis.edit_sweep(mu[:NUM_EDITED], dim, deltas)
    images = decode(latents.reshape(-1, mu.shape[1]))
    measured = jax.vmap(analysis.MEASURE_EDITED[name])(images).reshape(latents.shape[:2])
    prior = decode(model.apply(params, key, prior_samples, method="prior_sample"))
    valid_rate = lambda images: jax.vmap(analysis.IS_VALID_SAMPLE[name])(images).mean()
    out = {
        "latent/association": association,
        "latent/mutual_info_nats": mi,
        "latent/dim_dependence_nats": analysis.latent_dependence(mu),
        "latent/factor_entropy_nats": entropy,
        "latent/factor_dim": factor_dim,
        "latent/factor_score": association.max(axis=1),
        "latent/mig_per_factor": gap,
        "latent/mig": gap.mean(),
        "latent/active_dims": (mu.var(axis=0) > ACTIVE_VAR).sum(),
        "latent/edit_dim": dim,
        "latent/edit_spearman": jax.vmap(
            lambda m: analysis.spearman(sign * deltas, m))(measured).mean(),
        "prior/valid_rate": valid_rate(prior),
        "prior/round_trip_valid_rate": valid_rate(round_trip(params, prior, model=model)),
        "posterior/valid_rate": valid_rate(decode(z)),
    }
    out.update(probe_metrics(probe_key, mu, probe_labels(test, name), name))
    return out


def validation_loss(params, split: data.SplitKeys, key: jax.Array, *, config, model, mesh,
                    draws: int = VAL_DRAWS) -> jax.Array:
    """The validation negative ELBO (nats per image, []) that train.py logs, averaged over
    ``draws`` independent draws of z per image: one draw is too noisy to rank runs by."""
    def one_draw(k):
        terms = training.validation_terms(params, split, k, config=config, model=model,
                                          mesh=mesh)
        return terms["recon"] + terms["kl"]

    return jax.lax.map(one_draw, jax.random.split(key, draws)).mean()


def best_by_validation(per_seed: dict) -> dict:
    """The replica with the lowest validation negative ELBO (``best_val/seed``) and its test,
    prior and posterior scalars under ``best_val/<key>``: a choice of model that uses no test
    data. ``per_seed`` holds each metric with a leading seed axis."""
    val = np.asarray(per_seed[VAL_KEY])
    chex.assert_rank(val, 1)
    seed = int(np.argmin(val))
    out = {"best_val/seed": seed}
    for key, value in per_seed.items():
        value = np.asarray(value)
        if value.ndim == 1 and key.startswith(SELECTED_PREFIXES):
            out[f"best_val/{key}"] = float(value[seed])
    return out


def seed_metrics(params, test: data.Split, key: jax.Array, probe_key: jax.Array, *, config,
                 model, prior_samples: int = NUM_PRIOR_SAMPLES) -> dict:
    """Every test metric of one replica, under its public name (scalars or arrays).
    ``probe_key`` draws the probes' labelled examples (shared with the pixel baseline);
    ``prior_samples``: how many prior samples the validity rates are measured on."""
    images = test.images
    keys = jax.random.split(key, images.shape[0])
    one = partial(image_metrics, params, config=config, model=model)
    per_image = jax.lax.map(lambda a: one(*a), (images, keys),
                            batch_size=config.eval_batch_size)
    mean = {k: v.mean(axis=0) for k, v in per_image.items()}
    num_pixels = math.prod(images.shape[1:3])
    kl = mean["kl"]
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
    if "kl_per_dim" in mean:
        out["info/kl_per_dim_bits"] = mean["kl_per_dim"] / jnp.log(2.0)
    out.update(latent_metrics(params, per_image["mu"], per_image["z"], test,
                              jax.random.fold_in(key, 1),
                              probe_key, config=config, model=model,
                              prior_samples=prior_samples))
    return out


def iwae_metrics(params, images: jax.Array, key: jax.Array, *, config, model,
                 ks: tuple[int, ...]) -> dict:
    """Test negative log-likelihood bounds -IWAE_K (nats per image, mean over ``images``),
    one per K in ``ks``, and their gaps to the data's entropy floor where it is known."""
    likelihood = training.likelihood_name(config)

    log_prior = lambda z: model.apply(params, z, method="prior_log_prob")

    def one(x, k):
        mu, logvar = model.apply(params, x[None], method="encode")

        def log_likelihood(z):
            logits = model.apply(params, z, method="decode")
            return elbo.log_likelihood(likelihood, logits,
                                       jnp.broadcast_to(x, (z.shape[0], *x.shape)))

        return jnp.stack([elbo.importance_weighted_bound(
            log_likelihood, mu[0], logvar[0], jax.random.fold_in(k, num), num, IWAE_CHUNK,
            log_prior) for num in ks])

    keys = jax.random.split(key, images.shape[0])
    bounds = jax.lax.map(lambda a: one(*a), (images, keys),
                         batch_size=max(1, IWAE_DECODES // min(max(ks), IWAE_CHUNK)))
    nll = -bounds.mean(axis=0)
    out = {f"test/iwae_nats_per_image_k{num}": nll[i] for i, num in enumerate(ks)}
    floor = data.entropy_floor_nats(config.data)
    if floor is not None:
        out.update({f"test/iwae_gap_to_floor_nats_k{num}": nll[i] - floor
                    for i, num in enumerate(ks)})
    return out


def pixel_probe_metrics(test: data.Split, probe_key: jax.Array, name: str) -> dict:
    """The few-label probes on raw pixels (the baseline); with seed_metrics' probe_key both
    probes see the same labelled examples."""
    features = analysis.pixel_features(test.images, data.NUM_CLASSES[name])
    return probe_metrics(probe_key, features, probe_labels(test, name), name, suffix="_pixels")


def summarise(per_seed: dict[str, np.ndarray]) -> dict:
    """Mean over seeds (axis 0) under each key, ``<key>/std`` beside it, ``per_seed`` lists."""
    out = {}
    for k, v in per_seed.items():
        v = np.asarray(v, np.float64)
        out[k] = v.mean(axis=0).tolist()
        out[f"{k}/std"] = v.std(axis=0).tolist()
    out["per_seed"] = {k: np.asarray(v, np.float64).tolist() for k, v in per_seed.items()}
    return out


def name_factor_axes(metrics: dict, factor_names: tuple[str, ...]) -> dict:
    """Turns per-factor lists into {factor: value} dicts. Metrics indexed by dimension are
    seed 0's, without a std (``per_seed`` keeps every seed's); ``latent/dependency_chain``
    is the prior order that seed 0's dimension dependence suggests."""
    named = lambda values: dict(zip(factor_names, values, strict=True))
    for key in FACTOR_KEYS:
        metrics[key], metrics[f"{key}/std"] = named(metrics[key]), named(metrics[f"{key}/std"])
    for key in DIMENSION_KEYS:
        del metrics[f"{key}/std"]
        metrics[key] = metrics["per_seed"][key][0]
    metrics["latent/factor_dim"] = named(int(d) for d in metrics["latent/factor_dim"])
    metrics["latent/edit_dim"] = int(metrics["latent/edit_dim"])
    metrics["latent/dependency_chain"] = list(
        analysis.dependency_chain(metrics["latent/dim_dependence_nats"]))
    return metrics


def write_features_csv(path: Path, split: data.Split, data_name: str, mu: np.ndarray,
                       logvar: np.ndarray) -> None:
    """Source 000's features table: per test image its scalar factors (the analysed ones
    first), posterior mean and standard deviation."""
    name_order = list(data.ANALYSIS_FACTORS[data_name]) + sorted(split.factors)
    factors = {k: np.asarray(split.factors[k]) for k in dict.fromkeys(name_order)
               if np.ndim(split.factors[k]) == 1}
    d = mu.shape[1]
    header = (["index"] + list(factors) + [f"mu_{i}" for i in range(d)]
              + [f"sigma_{i}" for i in range(d)])
    sigma = np.exp(0.5 * logvar)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for n in range(mu.shape[0]):
            writer.writerow([n] + [factors[k][n].item() for k in factors]
                            + [f"{v:.6g}" for v in mu[n]] + [f"{v:.6g}" for v in sigma[n]])


def draw_figures(config, params, splits, outdir: Path, workdir: Path, key: jax.Array,
                 shown: dict) -> None:
    """Every figure of one replica (``shown``: its metrics), and its features CSV."""
    model = models.build_model(config)
    # params are arguments, not constants folded into the programs: one compile serves
    # every replica and beta (and the persistent compilation cache)
    decode_fn = jax.jit(lambda p, z: analysis.display_images(model.apply(p, z, method="decode")))
    decode = partial(decode_fn, params)
    test = splits["test"]
    name = config.data.name
    shape = test.images.shape[1:]
    d = config.latent_dim

    def decode_grid(latents):
        rows, cols = latents.shape[:2]
        return np.asarray(decode(latents.reshape(rows * cols, d))).reshape(rows, cols, *shape)

    if (workdir / "metrics.jsonl").exists():
        plotting.training_curves(workdir / "metrics.jsonl", outdir / "training_curves.png")
    mu, logvar = jax.device_get(jax.jit(partial(models.encode_split, model, batch_size=(
        config.eval_batch_size)))(params, test.images))
    write_features_csv(outdir / "features.csv", test, name, mu, logvar)
    x = test.images[:8]
    plotting.image_grid(np.stack([np.asarray(x), np.asarray(decode(mu[:8]))]),
                        outdir / "reconstructions.png", "test inputs (top) and "
                        "reconstructions from the posterior mean (bottom)",
                        row_labels=["input", "recon"])
    z_prior = jax.jit(partial(model.apply, method="prior_sample"), static_argnums=2)(
        params, key, 32).reshape(4, 8, d)
    prior_name = f"the learned {model.prior_type} prior" if model.prior_components else "N(0, I)"
    plotting.image_grid(decode_grid(z_prior), outdir / "prior_samples.png",
                        f"decoded samples z ~ {prior_name}")
    latents = analysis.traversal_latents(jnp.asarray(mu[0]),
                                         jnp.asarray(TRAVERSAL_VALUES, jnp.float32))
    plotting.image_grid(decode_grid(latents), outdir / "latent_traversal.png",
                        "each latent dimension swept over [-3, 3], others at a test "
                        "image's posterior mean", row_labels=[f"z{i}" for i in range(d)],
                        col_labels=[f"{t:+.0f}" for t in TRAVERSAL_VALUES])
    top2 = tuple(analysis.most_informative_dims(jnp.asarray(shown["info/per_dim_bits_mu"])))
    grid_values = jnp.asarray(MANIFOLD_VALUES, jnp.float32)
    for dims, file in (((0, 1), "manifold_z0_z1.png"), (top2, "manifold_top2.png")):
        plotting.image_grid(
            decode_grid(analysis.grid_latents(d, dims, grid_values)), outdir / file,
            f"decoded grid over z{dims[0]} (rows) and z{dims[1]} (columns) in "
            "[-1.5, 1.5], other dims 0",
            row_labels=[f"{v:+.1f}" for v in MANIFOLD_VALUES],
            col_labels=[f"{v:+.1f}" for v in MANIFOLD_VALUES])
    factor, label_names = data.LABELS[name]
    labels = np.asarray(test.factors[factor])
    plotting.latent_scatter(mu[:, list(top2)], labels, label_names, top2,
                            outdir / "latent_scatter.png",
                            colours=plotting.RECT_PALETTE if name == "rect" else None)
    draw_latent_analysis(config, decode_grid, test, mu, outdir, shown)


def draw_latent_analysis(config, decode_grid, test: data.Split, mu: np.ndarray, outdir: Path,
                         shown: dict) -> None:
    """Factor association heatmaps and scatters, constant-norm edits, interpolations."""
    name = config.data.name
    factor_names = data.ANALYSIS_FACTORS[name]
    entropy = np.asarray(shown["latent/factor_entropy_nats"])[:, None]
    plotting.factor_heatmaps(
        {"association (correlation ratio / |Pearson r|)": shown["latent/association"],
         "MI / H(factor)": np.asarray(shown["latent/mutual_info_nats"]) / entropy},
        factor_names, outdir / "factor_association.png")
    factor_dim = np.asarray(shown["latent/factor_dim"]).astype(int)
    factors = factor_matrix(test, name)
    plotting.factor_scatter(np.asarray(factors), mu, factor_dim,
                            factor_names, outdir / "factor_dims.png")
    edited = data.EDIT_FACTOR[name]
    shortest = np.argsort(np.asarray(test.factors[edited][:NUM_EDITED]), kind="stable")[:4]
    dim = int(shown["latent/edit_dim"])
    sign = float(edit_sign(jnp.asarray(mu), factors, name, dim))
    sweep = analysis.edit_sweep(jnp.asarray(mu[shortest]), dim,
                                jnp.asarray(sign * EDIT_DELTAS, jnp.float32))
    plotting.image_grid(decode_grid(sweep), outdir / "latent_edit.png",
                        f"z{dim} edited at constant |z|, columns: delta towards larger "
                        f"{edited}; Spearman {float(shown['latent/edit_spearman']):+.2f}",
                        col_labels=[f"{v:+.1f}" for v in EDIT_DELTAS])
    pairs = jnp.asarray(mu[:8]).reshape(4, 2, -1)
    paths = jax.vmap(lambda p: analysis.interpolation_latents(p[0], p[1],
                                                              INTERPOLATION_STEPS))(pairs)
    plotting.image_grid(decode_grid(paths), outdir / "interpolation.png",
                        "linear interpolation between the posterior means of two test images")


def report(config, params, per_seed: dict, splits, pixel_probes: dict, header: dict,
           outdir: Path, workdir: Path, key: jax.Array, figure_seed: int = 0) -> dict:
    """Summarised metrics (``header`` first) of one run's replicas (``params`` and
    ``per_seed`` metrics with a leading seed axis) and the figures of replica
    ``figure_seed``; writes ``outdir/metrics.json``."""
    outdir.mkdir(parents=True, exist_ok=True)
    shown_params = jax.device_put(take(params, figure_seed))
    metrics = dict(header, num_seeds=config.num_seeds, first_replica=config.first_replica,
                   num_params=models.count_params(shown_params))
    metrics["info/noise_std"] = info_noise_std(config)
    floor = data.entropy_floor_nats(config.data)
    if floor is not None:
        metrics["test/entropy_floor_nats_per_image"] = floor
    metrics.update(summarise(per_seed))
    if VAL_KEY in per_seed and config.num_seeds > 1:
        metrics.update(best_by_validation(per_seed))
    name_factor_axes(metrics, data.ANALYSIS_FACTORS[config.data.name])
    metrics.update({k: float(v) for k, v in pixel_probes.items()})
    shown = take(per_seed, figure_seed)
    draw_figures(config, shown_params, splits, outdir, workdir, key, shown)
    bits = {"source estimate Var(z)": shown["info/per_dim_bits"],
            "Var(mu) / (E[sigma^2] + sigma_n^2)": shown["info/per_dim_bits_mu"]}
    if "info/kl_per_dim_bits" in shown:  # the fixed N(0, I) prior's KL per dimension
        bits["KL (upper bound)"] = shown["info/kl_per_dim_bits"]
    plotting.bits_per_dim(
        bits, outdir / "bits_per_dim.png",
        f"information per latent dimension (seed {figure_seed}, "
        f"sigma_n = {info_noise_std(config)})")
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def take(tree, index):
    """Every leaf of ``tree`` indexed on its leading (replica) axis, as host arrays (no
    device op to compile per leaf)."""
    return jax.tree_util.tree_map(lambda v: np.asarray(v)[index], tree)


def beta_config(config, beta: float):
    """The config of one beta of a sweep: a plain run with that beta."""
    sub = config.copy_and_resolve_references()
    sub.beta, sub.sweep_betas = float(beta), ()
    return sub


def rate_distortion(per_beta: dict[str, dict], noisy: bool) -> dict:
    """Per beta (in sweep order): distortion (test recon, nats per image), rate (KL, bits)
    and, with training noise on z, the Gaussian-channel estimates (bits: the source's,
    from Var(z), and the one from Var(mu)); means and stds over seeds, and every seed's
    values under ``per_seed`` ([beta][seed])."""
    keys = {"distortion_nats": "test/recon_nats_per_image", "rate_kl_bits": "info/kl_bits"}
    if noisy:
        keys.update(rate_channel_bits="info/total_bits", rate_channel_bits_mu="info/total_bits_mu")
    out = {"beta": [float(b) for b in per_beta], "per_seed": {}}
    for name, key in keys.items():
        out[name] = [m[key] for m in per_beta.values()]
        out[f"{name}/std"] = [m[f"{key}/std"] for m in per_beta.values()]
        out["per_seed"][name] = [m["per_seed"][key] for m in per_beta.values()]
    return out


def evaluate(ckpt: str | Path, outdir: str | Path | None = None,
             iwae_ks: tuple[int, ...] | None = None, figure_seed: int = 0,
             prior_samples: int = NUM_PRIOR_SAMPLES) -> dict:
    """Evaluates a checkpoint: writes ``metrics.json`` and figures to ``outdir``.

    A beta sweep gets one sub-folder per beta (``beta_<b>/``, a plain run's metrics and
    figures for its seeds) and, at the top, the rate-distortion summary and plot.
    ``iwae_ks``: importance samples of the likelihood bounds (default IWAE_KS[dataset]);
    ``figure_seed``: the replica (of each beta) whose figures and features CSV are drawn;
    ``prior_samples``: decoded prior samples per replica behind ``prior/valid_rate``.
    """
    config, states, epoch, ckpt_dir = training.load_checkpoint(ckpt)
    if not 0 <= figure_seed < config.num_seeds:
        raise UserError(f"--figure_seed={figure_seed}: the run has {config.num_seeds} "
                        f"seed(s), 0..{config.num_seeds - 1}")
    workdir = ckpt_dir.parent
    default = "eval" if ckpt_dir.name == checkpoints.CHECKPOINT_DIR else f"eval_{ckpt_dir.name}"
    outdir = Path(outdir) if outdir else workdir / default
    outdir.mkdir(parents=True, exist_ok=True)
    data_key = rng.purpose_key(config.seed, "data")
    splits = data.build_splits(config.data, data_key)
    model = models.build_model(config)
    eval_key = rng.purpose_key(config.seed, "eval")
    per_seed_fn = jax.jit(jax.vmap(partial(seed_metrics, config=config, model=model,
                                           prior_samples=prior_samples),
                                   in_axes=(0, None, None, None)))
    probe_key = jax.random.fold_in(eval_key, 2)
    per_replica = jax.device_get(per_seed_fn(states.params, splits["test"],
                                             jax.random.fold_in(eval_key, 0), probe_key))
    if "val" in splits:  # what best_val/ picks by
        val_fn = jax.jit(jax.vmap(partial(
            validation_loss, config=config, model=model,
            mesh=parallel.make_mesh(config.num_seeds)), in_axes=(0, None, None)))
        per_replica[VAL_KEY] = jax.device_get(val_fn(
            states.params, data.build_split_keys(config.data, data_key)["val"],
            jax.random.fold_in(eval_key, 4)))
    iwae_fn = jax.jit(jax.vmap(partial(
        iwae_metrics, config=config, model=model,
        ks=tuple(iwae_ks or IWAE_KS[config.data.name])), in_axes=(0, None, None)))
    per_replica.update(jax.device_get(iwae_fn(states.params, splits["test"].images,
                                              jax.random.fold_in(eval_key, 3))))
    pixel_probes = jax.jit(pixel_probe_metrics, static_argnums=2)(
        splits["test"], probe_key, config.data.name)
    header = {"checkpoint": str(ckpt_dir / str(epoch)), "epoch": epoch,
              "prior_samples": prior_samples}
    if (workdir / checkpoints.SELECTION_FILE).is_file():  # a seed chosen among candidates
        header["selection"] = json.loads((workdir / checkpoints.SELECTION_FILE).read_text())
    run = partial(report, splits=splits, pixel_probes=pixel_probes, header=header,
                  workdir=workdir, key=jax.random.fold_in(eval_key, 1),
                  figure_seed=figure_seed)
    if not config.sweep_betas:
        return run(config, states.params, per_replica, outdir=outdir)
    per_beta = {}
    for b, beta in enumerate(config.sweep_betas):
        seeds = slice(b * config.num_seeds, (b + 1) * config.num_seeds)
        per_beta[f"{beta:g}"] = run(beta_config(config, beta), take(states.params, seeds),
                                    take(per_replica, seeds), outdir=outdir / f"beta_{beta:g}")
    summary = rate_distortion(per_beta, noisy=bool(config.latent_noise_std))
    plotting.rate_distortion(summary, outdir / "rate_distortion.png",
                             data.entropy_floor_nats(config.data),
                             f"{config.name}: beta sweep, {config.num_seeds} seed(s) per beta")
    metrics = dict(header, sweep_betas=[float(b) for b in config.sweep_betas],
                   num_seeds=config.num_seeds, rate_distortion=summary, per_beta=per_beta)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
