"""Named random keys: one root key from the config seed, split by purpose."""

import jax

PURPOSES = ("data", "init", "train", "eval", "prior_order")


def purpose_key(seed: int, purpose: str) -> jax.Array:
    """The key for one purpose (PURPOSES) of a run with ``seed``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), PURPOSES.index(purpose))


def replica_keys(seed: int, purpose: str, num_seeds: int, first: int = 0) -> jax.Array:
    """Keys [num_seeds, 2] of replicas ``first .. first + num_seeds - 1`` of ``seed``:
    replica i has the same keys in any run that trains it."""
    base = purpose_key(seed, purpose)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jax.numpy.arange(first, first + num_seeds))
