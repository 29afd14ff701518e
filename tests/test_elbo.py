import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaeshapes import elbo


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("jit", [False, True])
def test_kl_closed_form_matches_monte_carlo(jit):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    mu = jax.random.normal(k1, (3, 4))
    logvar = 0.5 * jax.random.normal(k2, (3, 4))
    kl = (jax.jit(elbo.kl_divergence) if jit else elbo.kl_divergence)(mu, logvar)
    chex.assert_shape(kl, (3,))
    # E_q[log q(z) - log p(z)] by sampling
    n = 200_000
    z = elbo.reparameterize(k3, jnp.repeat(mu, n, 0), jnp.repeat(logvar, n, 0)).reshape(3, n, 4)
    var = jnp.exp(logvar)[:, None]
    log_q = -0.5 * (jnp.square(z - mu[:, None]) / var + jnp.log(2 * jnp.pi * var))
    log_p = -0.5 * (jnp.square(z) + jnp.log(2 * jnp.pi))
    mc = (log_q - log_p).sum(-1).mean(-1)
    np.testing.assert_allclose(kl, mc, rtol=0.02, atol=0.01)


def test_kl_is_zero_at_prior_and_positive_elsewhere():
    zeros = jnp.zeros((2, 8))
    chex.assert_trees_all_close(elbo.kl_divergence(zeros, zeros), jnp.zeros(2))
    assert (elbo.kl_per_dim(zeros + 0.3, zeros) > 0).all()


@pytest.mark.parametrize("jit", [False, True])
def test_categorical_log_likelihood_matches_numpy(jit):
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    logits = 3 * jax.random.normal(k1, (4, 10, 10, 10))
    x = jax.random.randint(k2, (4, 10, 10), 0, 10)
    fn = jax.jit(elbo.categorical_log_likelihood) if jit else elbo.categorical_log_likelihood
    got = fn(logits, x)
    lp = _np_log_softmax(np.asarray(logits, np.float64))
    want = np.take_along_axis(lp, np.asarray(x)[..., None], -1).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_log_likelihood_matches_numpy_bce(jit):
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    logits = 4 * jax.random.normal(k1, (3, 28, 28, 1))
    x = jax.random.bernoulli(k2, 0.3, (3, 28, 28, 1)).astype(jnp.float32)
    fn = jax.jit(elbo.bernoulli_log_likelihood) if jit else elbo.bernoulli_log_likelihood
    got = fn(logits, x)
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    xn = np.asarray(x, np.float64)
    want = (xn * np.log(p) + (1 - xn) * np.log(1 - p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bernoulli_log_likelihood_is_stable_for_huge_logits():
    logits = jnp.full((1, 2, 2, 1), 1e4)
    x = jnp.zeros((1, 2, 2, 1))
    ll = elbo.bernoulli_log_likelihood(logits, x)
    chex.assert_tree_all_finite(ll)
    np.testing.assert_allclose(ll, -4e4, rtol=1e-6)


class _ToyModel:
    """encode: mu = x-mean per image, logvar fixed; decode: logits scaled by z[0];
    prior N(0, I)."""

    prior_components = 0

    def apply(self, params, x, method):
        if method == "prior_log_prob":
            return elbo.standard_normal_log_prob(x)
        if method == "encode":
            m = x.reshape(x.shape[0], -1).astype(jnp.float32).mean(-1, keepdims=True)
            return jnp.tile(m, (1, 2)), jnp.full((x.shape[0], 2), params["logvar"])
        return jnp.broadcast_to(params["logits"] * x[:, :1, None, None],
                                (x.shape[0], 10, 10, 10))


def test_elbo_terms_match_numpy_reference():
    params = {"logvar": -1.0, "logits": jax.random.normal(jax.random.PRNGKey(4), (10,))}
    x = jax.random.randint(jax.random.PRNGKey(5), (3, 10, 10), 0, 10)
    key = jax.random.PRNGKey(6)
    terms = elbo.elbo_terms(_ToyModel(), params, x, key, likelihood="categorical")
    chex.assert_shape([terms["recon"], terms["kl"]], (3,))
    # reference: same z draw, NumPy log-softmax and closed-form KL
    mu = np.asarray(x, np.float64).reshape(3, -1).mean(-1, keepdims=True).repeat(2, 1)
    eps = np.asarray(jax.random.normal(jax.random.split(key)[0], (3, 2)), np.float64)
    z = mu + np.exp(-0.5) * eps
    logits = np.asarray(params["logits"], np.float64)[None, None, None] * z[:, :1, None, None]
    lp = _np_log_softmax(np.broadcast_to(logits, (3, 10, 10, 10)))
    recon = -np.take_along_axis(lp, np.asarray(x)[..., None], -1).sum(axis=(1, 2, 3))
    kl = 0.5 * (np.exp(-1.0) + mu**2 - 1 + 1.0).sum(-1)
    np.testing.assert_allclose(terms["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
    assert float(elbo.loss(terms, 2.0)) == pytest.approx(float(np.mean(recon + 2 * kl)),
                                                         rel=1e-5)


def test_latent_noise_changes_only_the_reconstruction():
    params = {"logvar": -1.0, "logits": jnp.zeros(10) + jnp.arange(10.0)}
    x = jax.random.randint(jax.random.PRNGKey(5), (3, 10, 10), 0, 10)
    key = jax.random.PRNGKey(6)
    plain = elbo.elbo_terms(_ToyModel(), params, x, key, likelihood="categorical")
    noisy = elbo.elbo_terms(_ToyModel(), params, x, key, likelihood="categorical",
                            noise_std=0.5)
    chex.assert_trees_all_close(plain["kl"], noisy["kl"])
    assert not np.allclose(plain["recon"], noisy["recon"])


def test_iwae_terms_k1_is_one_importance_weight_drawn_by_hand():
    params = {"logvar": -1.0, "logits": jax.random.normal(jax.random.PRNGKey(4), (10,))}
    model, x = _ToyModel(), jax.random.randint(jax.random.PRNGKey(5), (3, 10, 10), 0, 10)
    key = jax.random.PRNGKey(6)
    terms = elbo.iwae_terms(model, params, x, key, likelihood="categorical", num_samples=1,
                            beta=2.0)
    chex.assert_shape([terms["bound"], terms["recon"], terms["kl"]], (3,))
    mu, logvar = model.apply(params, x, method="encode")
    z = mu + np.exp(-0.5) * np.asarray(jax.random.normal(key, (1, 3, 2)))[0]
    log_lik = elbo.categorical_log_likelihood(model.apply(params, z, method="decode"), x)
    log_ratio = elbo.log_normal(z, 0.0, 0.0) - elbo.log_normal(z, mu, logvar)
    np.testing.assert_allclose(terms["recon"], -log_lik, rtol=1e-5)
    np.testing.assert_allclose(terms["bound"], log_lik + 2.0 * log_ratio, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], elbo.kl_divergence(mu, logvar), rtol=1e-6)


def test_iwae_terms_bound_rises_with_k_above_the_elbo():
    params = {"logvar": 0.5, "logits": jnp.arange(10.0) / 3}
    x = jax.random.randint(jax.random.PRNGKey(5), (4, 10, 10), 0, 10)
    bound = jax.jit(lambda k, n: elbo.iwae_terms(_ToyModel(), params, x, k,
                                                 likelihood="categorical", num_samples=n),
                    static_argnums=1)
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    k1, k8 = ([bound(k, n) for k in keys] for n in (1, 8))
    b1, b8 = (np.array([t["bound"] for t in draws]) for draws in (k1, k8))
    elbos = np.array([-(t["recon"] + t["kl"]) for t in k1])  # with the closed-form KL
    assert np.all(b8.mean(0) > b1.mean(0) + 10.0)
    # K = 1: the ELBO with a sampled KL; the same in expectation
    err = np.sqrt((b1.var(0) + elbos.var(0)) / len(keys))
    assert np.all(np.abs(b1.mean(0) - elbos.mean(0)) < 4 * err)


def test_elbo_encoder_trains_the_decoder_on_the_bound_and_the_encoder_on_the_elbo():
    params = {"logvar": 0.3, "logits": jnp.arange(10.0) / 3}  # encoder, decoder params
    x = jax.random.randint(jax.random.PRNGKey(5), (4, 10, 10), 0, 10)
    key = jax.random.PRNGKey(7)

    def grad_of(term, **kw):
        terms = lambda p: elbo.iwae_terms(_ToyModel(), p, x, key, likelihood="categorical",
                                          num_samples=5, **kw)
        return jax.grad(lambda p: term(terms(p)).mean())(params)

    split = grad_of(lambda t: t["objective"], elbo_encoder=True)
    bound = grad_of(lambda t: t["bound"])
    elbo_value = grad_of(lambda t: -t["recon"] - t["kl"])  # same draws, closed-form KL
    np.testing.assert_allclose(split["logits"], bound["logits"], rtol=1e-5)
    np.testing.assert_allclose(split["logvar"], elbo_value["logvar"], rtol=1e-5)
    assert not np.allclose(bound["logvar"], elbo_value["logvar"], rtol=1e-2)
    both = [elbo.iwae_terms(_ToyModel(), params, x, key, likelihood="categorical",
                            num_samples=5, elbo_encoder=e) for e in (False, True)]
    chex.assert_trees_all_close(both[0], both[1], rtol=1e-6)  # same values


# A 1-D model whose likelihood is known: z ~ N(0, 1), x | z ~ N(z, S^2), so
# p(x) = N(x; 0, 1 + S^2) and the posterior is N(x / (1 + S^2), S^2 / (1 + S^2)).
S, X = 0.5, 2.0
LOG_PX = float(elbo.log_normal(jnp.array([X]), 0.0, jnp.log(1 + S**2)))
toy_log_likelihood = lambda z: elbo.log_normal(X - z, 0.0, jnp.log(S**2))


def toy_bounds(mu, logvar, num_samples, draws):
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    bound = lambda k: elbo.importance_weighted_bound(
        toy_log_likelihood, jnp.array([mu]), jnp.array([logvar]), k, num_samples, chunk=64)
    return np.asarray(jax.jit(jax.vmap(bound))(keys))


def test_iwae_with_the_exact_posterior_is_the_exact_likelihood():
    exact = toy_bounds(X / (1 + S**2), float(np.log(S**2 / (1 + S**2))), 1, 4)
    np.testing.assert_allclose(exact, LOG_PX, atol=1e-5)


def test_iwae_k1_is_the_elbo_in_expectation():
    m, v = 1.0, 0.5  # a deliberately wrong posterior
    elbo_exact = (-0.5 * np.log(2 * np.pi * S**2) - ((X - m) ** 2 + v) / (2 * S**2)
                  - 0.5 * np.log(2 * np.pi) - (m**2 + v) / 2 + 0.5 * np.log(2 * np.pi * np.e * v))
    draws = toy_bounds(m, float(np.log(v)), 1, 20_000)
    assert abs(draws.mean() - elbo_exact) < 4 * draws.std() / np.sqrt(draws.size)
    assert elbo_exact < LOG_PX - 1.0  # so the test can tell the bound from log p(x)


def test_iwae_rises_towards_the_likelihood_with_k():
    means = [toy_bounds(0.0, 0.0, k, 400).mean() for k in (1, 10, 100, 1000)]  # q = prior
    assert means[0] < means[1] < means[2] < means[3] <= LOG_PX + 0.01
    assert LOG_PX - means[0] > 1.0 and LOG_PX - means[3] < 0.05


def test_free_bits_floor_each_dimension_of_the_batch_mean_kl():
    kl_dims = jnp.array([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]])
    terms = dict(recon=jnp.array([5.0, 7.0]), kl=kl_dims.sum(axis=1), kl_per_dim=kl_dims)
    assert float(elbo.loss(terms, 1.0)) == pytest.approx(6.0 + 1.7)
    # dims' batch means 0.2, 1.5, 0: floored at 0.5 -> 0.5 + 1.5 + 0.5
    assert float(elbo.loss(terms, 2.0, free_bits=0.5)) == pytest.approx(6.0 + 2 * 2.5)
    grad = jax.grad(lambda k: elbo.loss(dict(terms, kl_per_dim=k), 1.0, 0.5))(kl_dims)
    np.testing.assert_allclose(grad, [[0, 0.5, 0], [0, 0.5, 0]])  # only the dim above 0.5


class _ToyMixturePriorModel(_ToyModel):
    """_ToyModel with a one-component "learned" prior N(m, exp(lv)) in its params."""

    prior_components = 1

    def apply(self, params, x, method):
        if method == "prior_log_prob":
            return elbo.log_normal(x, params["prior_mean"], params["prior_logvar"])
        return super().apply(params, x, method)


@pytest.mark.parametrize("jit", [False, True])
def test_log_normal_pairwise_matches_float64_for_narrow_and_wide_components(jit):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(7), 4)
    means = 2.0 * jax.random.normal(k1, (64, 5))
    logvars = jax.random.uniform(k2, (64, 5), minval=-14.0, maxval=2.0)
    # draws near chosen components, so the narrow ones are scored where they matter
    picked = jax.random.randint(k3, (2, 3), 0, 64)
    x = means[picked] + jnp.exp(0.5 * logvars[picked]) * jax.random.normal(k4, (2, 3, 5))
    fn = jax.jit(elbo.log_normal_pairwise) if jit else elbo.log_normal_pairwise
    got = fn(x, means, logvars)
    chex.assert_shape(got, (2, 3, 64))
    x64, m64, lv64 = (np.asarray(a, np.float64) for a in (x, means, logvars))
    want = -0.5 * (np.log(2 * np.pi) + lv64 + (x64[..., None, :] - m64) ** 2 / np.exp(lv64)).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    own = np.take_along_axis(np.asarray(got), np.asarray(picked)[..., None], -1)
    np.testing.assert_allclose(own, np.take_along_axis(want, np.asarray(picked)[..., None], -1),
                               atol=1e-4)  # where a narrow component's density is large

    def total(f):
        return lambda *a: jnp.sum(jax.nn.logsumexp(f(*a), axis=-1))

    grads = jax.grad(total(fn), argnums=(0, 1, 2))(x, means, logvars)
    broadcast = lambda x, m, lv: elbo.log_normal(x[..., None, :], m, lv)
    chex.assert_trees_all_close(grads, jax.grad(total(broadcast), argnums=(0, 1, 2))(
        x, means, logvars), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
def test_log_normal_gradients_stay_finite_for_huge_variances(jit):
    # an autoregressive prior's MLP can emit log-variances past float32's exp range (seen
    # at 113 in a run that then diverged): such a component has density ~0 and must get a
    # zero gradient, not inf / inf
    means = jnp.array([[0.0], [1.0], [2.0]])
    logvars = jnp.array([[0.0], [113.0], [-9.0]])
    x = jnp.array([[0.5], [3.0]])

    def total(x, means, logvars):
        per_component = elbo.log_normal(x[:, None, :], means, logvars)
        chex.assert_shape(per_component, (2, 3))
        return jnp.sum(jax.nn.logsumexp(per_component, axis=-1))

    fn = jax.jit(jax.grad(total, argnums=(0, 1, 2))) if jit else jax.grad(total, argnums=(0, 1, 2))
    grads = fn(x, means, logvars)
    chex.assert_tree_all_finite(grads)
    chex.assert_trees_all_close(grads[1][1], jnp.zeros(1), atol=1e-30)


def test_learned_prior_kl_is_an_unbiased_estimate_of_the_closed_form():
    params = {"logvar": -0.7, "logits": jnp.arange(10.0) / 3, "prior_mean": 0.4,
              "prior_logvar": 0.6}
    x = jax.random.randint(jax.random.PRNGKey(5), (3, 10, 10), 0, 10)
    model = _ToyMixturePriorModel()
    mu, logvar = model.apply(params, x, method="encode")
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.PRNGKey(8), (5000, 3, 2))
    estimate = elbo.kl_to_prior(model, params, z, mu, logvar)
    chex.assert_shape(estimate, (3,))
    # KL(N(mu, v) || N(m, w)) per dimension = 0.5 (log w/v + (v + (mu - m)^2) / w - 1)
    v, w = np.exp(-0.7), np.exp(0.6)
    exact = 0.5 * (np.log(w / v) + (v + (np.asarray(mu) - 0.4) ** 2) / w - 1).sum(axis=1)
    np.testing.assert_allclose(estimate, exact, rtol=0.02)
    # elbo_terms uses it with one draw, and has no KL per dimension for a learned prior
    terms = elbo.elbo_terms(model, params, x, jax.random.PRNGKey(6), likelihood="categorical")
    assert set(terms) == {"recon", "kl"}
    assert not np.allclose(terms["kl"], elbo.kl_divergence(mu, logvar), rtol=1e-2)


def test_iwae_with_a_learned_prior_weighs_by_that_prior():
    # the 1-D toy model with prior N(1, 4): p(x) = N(x; 1, 4 + S^2), posterior mean
    # 1 + 4 (x - 1) / (4 + S^2), variance 4 S^2 / (4 + S^2)
    log_px = float(elbo.log_normal(jnp.array([X]), 1.0, jnp.log(4 + S**2)))
    mean, var = 1 + 4 * (X - 1) / (4 + S**2), 4 * S**2 / (4 + S**2)
    bound = elbo.importance_weighted_bound(
        toy_log_likelihood, jnp.array([mean]), jnp.array([np.log(var)]), jax.random.PRNGKey(0),
        8, log_prior_fn=lambda z: elbo.log_normal(z, 1.0, jnp.log(4.0)))
    np.testing.assert_allclose(bound, log_px, atol=1e-5)
    assert abs(log_px - LOG_PX) > 0.1  # the standard-normal prior would give another value
