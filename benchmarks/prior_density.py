"""What a learned mixture prior costs, and what ``elbo.log_normal_pairwise`` saves, side
by side in one run.

    python benchmarks/prior_density.py [--components=512,2048,8192] [--repeats=20]
        [--train_priors=none,mixture:8192,autoregressive:32] [--train_batches=8]
        [--json=benchmarks/prior_density.json]

1. The prior's log-density of a batch of 64 latents (D = 5, as rect_best) and its
   gradient, for each number of components M: the broadcast form
   ``log_normal(z[:, None, :], means, logvars)`` (a [B, M, D] array, what the model used
   before) against ``log_normal_pairwise`` (the model's now). Median milliseconds of
   both, their ratio, and the largest difference of their values relative to max(1, |value|).
2. Whole training epochs of ``configs/rect_best.py`` (timed on ``--train_batches``
   batches, scaled to its 64), as train.py runs them, for each prior in
   ``--train_priors`` (the autoregressive one with MLPs 256-256); a mixture with the
   pairwise density and with the broadcast one. The variants alternate so machine noise
   hits all of them; each is also given relative to the first.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import load as load_config  # noqa: E402
from vaeshapes import elbo, training  # noqa: E402

_COMPONENTS = flags.DEFINE_list("components", ["512", "2048", "8192"], "M for part 1.")
_TRAIN_PRIORS = flags.DEFINE_list("train_priors",
                                  ["none", "mixture:8192", "autoregressive:32"],
                                  "Priors for part 2: none (N(0, I)) or <prior_type>:<M>.")
_TRAIN_BATCHES = flags.DEFINE_integer("train_batches", 8, "Batches per timed epoch (part 2).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls of each variant (median).")
_JSON = flags.DEFINE_string("json", "benchmarks/prior_density.json", "Where to write results.")

BATCH, LATENT = 64, 5


def broadcast_log_normal(x, means, logvars):
    """The reference: one [..., M, D] array, then a sum over D."""
    return elbo.log_normal(x[..., None, :], means, logvars)


@contextlib.contextmanager
def density(fn):
    """Makes the model use ``fn`` as its pairwise density while tracing inside."""
    shipped = elbo.log_normal_pairwise
    elbo.log_normal_pairwise = fn
    try:
        yield
    finally:
        elbo.log_normal_pairwise = shipped


def interleaved_medians(calls: dict, repeats: int) -> dict:
    """Median seconds of each zero-argument call, the calls taking turns."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def density_row(num_components: int) -> dict:
    """Part 1 for one M."""
    k_z, k_m, k_v, k_w = jax.random.split(jax.random.PRNGKey(0), 4)
    z = jax.random.normal(k_z, (BATCH, LATENT))
    means = jax.random.normal(k_m, (num_components, LATENT))
    logvars = jax.random.uniform(k_v, (num_components, LATENT), minval=-8.0, maxval=1.0)
    log_weights = jax.nn.log_softmax(jax.random.normal(k_w, (num_components,)))

    def value_and_grad(fn):
        def total(*args):
            return jnp.sum(jax.nn.logsumexp(fn(*args[:3]) + args[3], axis=-1))
        compiled = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3)))
        return lambda: compiled(z, means, logvars, log_weights)

    fns = dict(broadcast=broadcast_log_normal, pairwise=elbo.log_normal_pairwise)
    calls = {name: value_and_grad(fn) for name, fn in fns.items()}
    for call in calls.values():
        jax.block_until_ready(call())  # compile
    seconds = interleaved_medians(calls, _REPEATS.value)
    values = [fn(z, means, logvars) for fn in fns.values()]
    return dict(components=num_components, broadcast_ms=1e3 * seconds["broadcast"],
                pairwise_ms=1e3 * seconds["pairwise"],
                speedup=seconds["broadcast"] / seconds["pairwise"],
                max_rel_difference=float(jnp.max(jnp.abs(values[0] - values[1])
                                                 / jnp.maximum(1.0, jnp.abs(values[0])))))


def epoch_call(prior: str, fn):
    """A compiled chunk of one rect_best epoch (``_TRAIN_BATCHES`` batches) with ``prior``
    ("none", "mixture:M" or "autoregressive:M"), traced with ``fn`` as the mixture's
    density, as a zero-argument call."""
    config = load_config("rect_best")
    kind, _, components = prior.partition(":")
    config.model.prior_components = int(components or 0)
    config.model.prior_type = kind if components else "mixture"
    config.model.prior_hidden = (256, 256)
    config.data.num_train = config.batch_size * _TRAIN_BATCHES.value
    config.data.num_val = 0
    trainer = training.build_trainer(config)
    state = {"states": trainer.fresh_states()}
    with density(fn):
        compiled = trainer.chunk.lower(state["states"], trainer.betas, trainer.splits["train"],
                                       None, 1).compile()

    def call():
        state["states"], metrics = compiled(state["states"], trainer.betas,
                                            trainer.splits["train"], None)
        return metrics

    jax.block_until_ready(call())  # warm-up
    return call


def epoch_rows() -> list[dict]:
    """Part 2: seconds per full rect_best epoch for each prior (and mixture density)."""
    calls = {}
    for prior in _TRAIN_PRIORS.value:
        mixture = prior.startswith("mixture")
        calls[(prior, "pairwise" if mixture else "-")] = epoch_call(
            prior, elbo.log_normal_pairwise)
        if mixture:
            calls[(prior, "broadcast")] = epoch_call(prior, broadcast_log_normal)
    seconds = interleaved_medians(calls, _REPEATS.value)
    full_batches = load_config("rect_best").data.num_train // BATCH
    scale = full_batches / _TRAIN_BATCHES.value
    return [dict(prior=prior, density=name, epoch_s=s * scale)
            for (prior, name), s in seconds.items()]


def main(argv):
    del argv
    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s)\n"
          f"{'M':>6} {'broadcast ms':>12} {'pairwise ms':>11} {'speed-up':>8} {'max rel diff':>12}")
    densities = []
    for m in map(int, _COMPONENTS.value):
        row = density_row(m)
        densities.append(row)
        print(f"{m:>6} {row['broadcast_ms']:>12.2f} {row['pairwise_ms']:>11.2f} "
              f"{row['speedup']:>7.1f}x {row['max_rel_difference']:>12.1e}", flush=True)
    epochs = epoch_rows()
    base = epochs[0]["epoch_s"]
    print(f"\nrect_best training, s per epoch ({_TRAIN_BATCHES.value} batches timed)\n"
          f"{'prior':>18} {'density':>9} {'s / epoch':>9} {'vs first':>8}")
    for r in epochs:
        r["vs_first"] = r["epoch_s"] / base
        print(f"{r['prior']:>18} {r['density']:>9} {r['epoch_s']:>9.3f} "
              f"{r['vs_first']:>7.2f}x")
    out = dict(machine=dict(platform=platform.platform(), jax=jax.__version__,
                            devices=[str(d) for d in jax.devices()]),
               density=densities, training=epochs)
    Path(_JSON.value).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)
