import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import tiny_rect_config
from vaeshapes import checkpoints, data, elbo, models, plotting, rng, training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny 2-seed run (4 epochs, checkpoints at 2 and 4, a validation split, rollback
    on so its fallback state is checkpointed too), shared by several tests."""
    config = tiny_rect_config()
    config.num_seeds = 2
    config.data.num_val, config.rollback_tolerance = 32, 0.5
    workdir = tmp_path_factory.mktemp("run")
    states = training.train(config, workdir)
    return config, workdir, states


def test_train_writes_metrics_checkpoints_and_curves(trained):
    config, workdir, states = trained
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    for key in ("train/loss_per_pixel", "train/recon_per_pixel", "train/kl_per_pixel"):
        assert all(np.isfinite(r[key]) for r in records)
        assert f"{key}/std" in records[0]  # two seeds
        for r in records:
            seeds = np.array(r["per_seed"][key])
            chex.assert_shape(seeds, (2,))
            np.testing.assert_allclose(seeds.mean(), r[key], rtol=1e-6)
            np.testing.assert_allclose(seeds.std(), r[f"{key}/std"], rtol=1e-5, atol=1e-9)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    assert (workdir / "figures" / "training_curves.png").stat().st_size > 0
    chex.assert_shape(states.epoch, (2,))
    assert states.epoch.tolist() == [4, 4]


def test_best_checkpoint_is_the_lowest_validation_loss(trained):
    _, workdir, states = trained
    records = {r["epoch"]: r for r in map(
        json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}
    val_at = {epoch: records[epoch - 1]["val/loss_per_pixel"] for epoch in (2, 4)}
    ckpt_dir, epoch = checkpoints.locate(workdir / "best")
    assert ckpt_dir == workdir / "best"
    assert [p.name for p in ckpt_dir.iterdir() if p.name.isdigit()] == [str(epoch)]
    assert epoch == min(val_at, key=val_at.get)
    _, best_states, best_epoch, _ = training.load_checkpoint(workdir / "best")
    assert best_epoch == epoch and best_states.epoch.tolist() == [epoch, epoch]


def test_seed_replicas_differ_and_replica0_equals_single_seed_run(trained, tmp_path):
    config, _, states = trained
    p0, p1 = (jax.tree_util.tree_map(lambda x, i=i: x[i], states.params) for i in (0, 1))
    assert not np.allclose(p0["params"]["fc_mu"]["kernel"], p1["params"]["fc_mu"]["kernel"])
    single = tiny_rect_config()
    single_states = training.train(single, tmp_path)
    assert not (tmp_path / "best").exists()  # no validation split, no best checkpoint
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[0], single_states.params),
                                p0, atol=1e-5)


def test_first_replica_trains_that_replica_of_a_multi_seed_run(trained, tmp_path):
    _, _, states = trained
    config = tiny_rect_config()
    config.first_replica = 1
    alone = training.train(config, tmp_path)
    p1 = jax.tree_util.tree_map(lambda x: x[1], states.params)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[0], alone.params), p1,
                                atol=1e-5)
    p0 = jax.tree_util.tree_map(lambda x: x[0], states.params)
    assert not np.allclose(alone.params["params"]["fc_mu"]["kernel"][0],
                           p0["params"]["fc_mu"]["kernel"])


def test_checkpoint_round_trip_gives_identical_state(trained):
    config, workdir, states = trained
    mngr = checkpoints.manager(workdir / "checkpoints", read_only=True)
    model = models.build_model(config)
    abstract = jax.eval_shape(lambda: training.init_states(config, model,
                                                          training.make_optimizer(config)))
    restored = checkpoints.restore_states(mngr, 4, abstract)
    chex.assert_trees_all_equal(restored, states)
    assert checkpoints.config_to_json_dict(checkpoints.restore_config(mngr, 4)) == \
        checkpoints.config_to_json_dict(config)


def test_resume_continues_at_the_right_epoch_and_matches(trained, tmp_path):
    config, _, states = trained
    short = config.copy_and_resolve_references()
    short.num_epochs = 2
    training.train(short, tmp_path)
    resumed = training.train(config, tmp_path)  # same workdir, 4 epochs: resumes at 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    chex.assert_trees_all_equal(resumed.params, states.params)
    chex.assert_trees_all_equal(resumed.fallback, states.fallback)


def test_checkpoint_written_before_added_fields_existed_still_loads(trained, tmp_path):
    config, _, states = trained
    old = tiny_rect_config()
    old.num_seeds = 2
    del old["keep_best"], old["rollback_tolerance"]  # a config from before they were added
    states = states.replace(fallback=None)  # and a state from before rollback
    mngr = checkpoints.manager(tmp_path / "checkpoints")
    checkpoints.save(mngr, 4, states, old)
    mngr.close()
    loaded, restored, epoch, _ = training.load_checkpoint(tmp_path)
    assert epoch == 4 and loaded.keep_best is True and loaded.rollback_tolerance == 0.0
    chex.assert_trees_all_equal(restored, states)


def test_checkpoint_written_before_a_state_field_existed_still_loads(trained, tmp_path):
    config, _, states = trained
    assert states.restarts is None  # the field the state had not yet (restart_above = 0)
    old_state = {f.name: getattr(states, f.name) for f in dataclasses.fields(states)
                 if f.name != "restarts"}  # how orbax stored the state before the field
    mngr = checkpoints.manager(tmp_path / "checkpoints")
    checkpoints.save(mngr, 4, old_state, config)
    mngr.close()
    _, restored, epoch, _ = training.load_checkpoint(tmp_path)
    assert epoch == 4
    chex.assert_trees_all_equal(restored, states)


def test_resume_with_a_different_model_is_refused(trained):
    config, workdir, _ = trained
    other = tiny_rect_config()
    other.num_seeds = 2
    other.latent_dim = 4
    with pytest.raises(training.UserError, match="latent_dim"):
        training.train(other, workdir)


@pytest.mark.parametrize("importance_samples,prior_components", [(1, 0), (3, 0), (1, 8)])
def test_a_few_steps_lower_the_loss(importance_samples, prior_components):
    config = tiny_rect_config()
    config.train_importance_samples = importance_samples
    config.model.prior_components = prior_components
    trainer = training.build_trainer(config)
    fresh = trainer.fresh_states()
    before = jax.device_get(fresh.params)  # run() donates the states it is given
    states, metrics = trainer.run(fresh, 6)
    loss = np.asarray(metrics["train/loss"])[:, 0]
    chex.assert_shape(loss, (6,))
    assert loss[-1] < 0.9 * loss[0]  # 24 Adam steps: ~254 -> ~221 nats per image
    if prior_components:  # the learned prior trains too
        assert not np.allclose(states.params["params"]["prior_means"],
                               before["params"]["prior_means"])


def test_train_step_jit_matches_eager():
    config = tiny_rect_config()
    config.model.conv_impl = "xla"  # op by op, flax's convs are far quicker to run eagerly
    model = models.build_model(config)
    optimizer = training.make_optimizer(config)
    init = jax.jit(lambda k0, k1: training.init_state(config, model, optimizer, k0, k1))
    state = init(jax.random.PRNGKey(0), jax.random.PRNGKey(1))
    batch = data.build_splits(config.data, rng.purpose_key(0, "data"))["train"].images[:16]

    def step(s, b):
        return training.train_step(s, b, jnp.float32(config.beta), config=config, model=model,
                                   optimizer=optimizer)

    eager, m_eager = step(state, batch)
    jitted, m_jit = jax.jit(step)(state, batch)
    chex.assert_trees_all_close(eager.params, jitted.params, atol=1e-5)
    chex.assert_trees_all_close(m_eager, m_jit, rtol=1e-5)
    assert int(jitted.step) == 1


def test_importance_weighted_training_steps_on_the_iwae_bound():
    config = tiny_rect_config()
    config.model.conv_impl = "xla"
    config.train_importance_samples = 4
    model = models.build_model(config)
    optimizer = training.make_optimizer(config)
    state = training.init_state(config, model, optimizer, jax.random.PRNGKey(0),
                                jax.random.PRNGKey(1))
    batch = data.build_splits(config.data, rng.purpose_key(0, "data"))["train"].images[:16]

    def step(config):
        return jax.jit(lambda s, b: training.train_step(
            s, b, jnp.float32(1.0), config=config, model=model, optimizer=optimizer))(state,
                                                                                    batch)

    new, metrics = step(config)
    key = jax.random.fold_in(jax.random.fold_in(state.key, state.epoch), state.step)
    terms = elbo.iwae_terms(model, state.params, batch, key, likelihood="categorical",
                            num_samples=4)
    np.testing.assert_allclose(metrics["loss"], -terms["bound"].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["recon"], terms["recon"].mean(), rtol=1e-5)
    assert not np.allclose(metrics["loss"], metrics["recon"] + metrics["kl"], rtol=1e-3)
    assert int(new.step) == 1
    # PIWAE: the same loss and decoder step; the encoder steps on the ELBO instead
    config.train_elbo_encoder = True
    split, split_metrics = step(config)
    np.testing.assert_allclose(split_metrics["loss"], metrics["loss"], rtol=1e-6)
    chex.assert_trees_all_close(split.params["params"]["dec_out"],
                                new.params["params"]["dec_out"], rtol=1e-6)
    assert not np.allclose(split.params["params"]["fc_logvar"]["kernel"],
                           new.params["params"]["fc_logvar"]["kernel"])


def test_epoch_batches_is_a_permutation_without_the_remainder():
    idx = training.epoch_batches(jax.random.PRNGKey(0), 70, 16)
    chex.assert_shape(idx, (4, 16))
    assert len(np.unique(np.asarray(idx))) == 64


def test_nonfinite_training_stops_with_a_clear_error(tmp_path):
    config = tiny_rect_config()
    config.learning_rate = 1e30
    with pytest.raises(training.NonFiniteError, match="non-finite") as error:
        training.train(config, tmp_path)
    assert "config.grad_clip_norm" in str(error.value)  # the usual remedy is named
    assert not (tmp_path / "checkpoints").exists() or not any(
        (tmp_path / "checkpoints").iterdir())


def test_learning_rate_warmup_and_cosine_schedules():
    config = tiny_rect_config()  # 4 steps per epoch, 4 epochs
    assert training.learning_rate(config) == config.learning_rate  # constant by default
    config.lr_warmup_epochs = 1
    warm = training.learning_rate(config)
    np.testing.assert_allclose([warm(0), warm(2), warm(4), warm(15)],
                               [0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    config.lr_schedule = "cosine"
    cosine = training.learning_rate(config)
    np.testing.assert_allclose([cosine(0), cosine(4), cosine(10), cosine(16)],
                               [0, 1e-3, 5e-4, 0], rtol=1e-5, atol=1e-9)


def test_gradient_clipping_scales_down_large_gradients_before_adam():
    config = tiny_rect_config()
    params = {"w": jnp.zeros(3)}
    grads = [{"w": jnp.array([30.0, 40.0, 0.0])}, {"w": jnp.array([0.3, -0.4, 0.1])}]

    def updates(optimizer, grad_list):
        state, out = optimizer.init(params), []
        for g in grad_list:
            u, state = optimizer.update(g, state, params)
            out.append(u["w"])
        return out

    plain = updates(training.make_optimizer(config), grads)
    np.testing.assert_allclose(plain, updates(optax.adam(config.learning_rate), grads))
    config.grad_clip_norm = 5.0  # the first gradient (norm 50) becomes norm 5
    clipped = updates(training.make_optimizer(config), grads)
    scaled = [{"w": grads[0]["w"] / 10}, grads[1]]
    np.testing.assert_allclose(clipped, updates(optax.adam(config.learning_rate), scaled),
                               rtol=1e-6)
    assert not np.allclose(clipped[1], plain[1])  # Adam's moments remember the clip


def test_kl_warmup_is_linear_in_steps():
    config = tiny_rect_config()
    config.beta, config.kl_warmup_epochs = 2.0, 2  # 8 steps
    weights = [float(training.kl_weight(config, jnp.array(s), config.beta))
               for s in (0, 4, 8, 100)]
    assert weights == [0.0, 1.0, 2.0, 2.0]
    config.kl_warmup_epochs = 0
    assert training.kl_weight(config, jnp.array(0), config.beta) == 2.0


def test_streaming_draws_fresh_training_images_every_epoch():
    config = tiny_rect_config()
    fixed = data.build_split_keys(config.data, rng.purpose_key(0, "data"))["train"]
    key = jax.random.PRNGKey(3)
    assert training.epoch_train_split(config, fixed, key) is fixed
    config.data.stream = True
    a = training.epoch_train_split(config, fixed, key)
    b = training.epoch_train_split(config, fixed, jax.random.fold_in(key, 1))
    chex.assert_equal_shape([a.keys, fixed.keys])
    assert not np.array_equal(a.keys, fixed.keys) and not np.array_equal(a.keys, b.keys)


def test_training_aids_train_and_a_cosine_run_cannot_change_length(tmp_path):
    config = tiny_rect_config()
    config.num_epochs, config.checkpoint_every = 2, 1
    config.data.stream, config.kl_warmup_epochs, config.free_bits = True, 1, 0.1
    config.lr_schedule, config.lr_warmup_epochs, config.grad_clip_norm = "cosine", 1, 1.0
    states = training.train(config, tmp_path)
    assert int(states.epoch[0]) == 2
    longer = config.copy_and_resolve_references()
    longer.num_epochs = 3
    with pytest.raises(training.UserError, match="num_epochs"):
        training.train(longer, tmp_path)


@pytest.mark.parametrize("jit", [False, True])
def test_roll_back_if_worse_restores_params_and_moments_but_keeps_counts(jit):
    config = tiny_rect_config()
    config.rollback_tolerance = 0.2
    model, optimizer = models.build_model(config), training.make_optimizer(config)
    keys = jax.random.split(jax.random.PRNGKey(0))
    roll = training.roll_back_if_worse
    roll = jax.jit(roll) if jit else roll
    best = roll(training.init_state(config, model, optimizer, *keys), jnp.float32(5.0), 0.2)
    assert float(best.fallback.val_loss) == 5.0  # the first epoch sets the fallback
    grads = jax.tree_util.tree_map(jnp.ones_like, best.params)
    updates, opt_state = optimizer.update(grads, best.opt_state, best.params)
    moved = best.replace(params=optax.apply_updates(best.params, updates), opt_state=opt_state)

    within = roll(moved, jnp.float32(5.9), 0.2)  # worse, but within the tolerance
    chex.assert_trees_all_equal(within.params, moved.params)
    chex.assert_trees_all_equal(within.fallback, best.fallback)
    for bad in (6.1, jnp.nan):
        back = roll(moved, jnp.float32(bad), 0.2)
        chex.assert_trees_all_equal(back.params, best.params)
        floats, counts = ([leaf for leaf in jax.tree_util.tree_leaves(s.opt_state)
                           if jnp.issubdtype(leaf.dtype, jnp.floating) == want]
                          for s, want in ((best, True), (moved, False)))
        chex.assert_trees_all_equal([leaf for leaf in jax.tree_util.tree_leaves(back.opt_state)
                                     if jnp.issubdtype(leaf.dtype, jnp.floating)], floats)
        chex.assert_trees_all_equal([leaf for leaf in jax.tree_util.tree_leaves(back.opt_state)
                                     if not jnp.issubdtype(leaf.dtype, jnp.floating)], counts)
        assert [int(c) for c in counts] == [1]  # Adam's count went on
        assert int(back.fallback.rollbacks) == 1
        assert float(back.fallback.val_loss) == 5.0
    lower = roll(moved, jnp.float32(4.0), 0.2)
    chex.assert_trees_all_equal(lower.fallback.params, moved.params)
    assert float(lower.fallback.val_loss) == 4.0 and int(lower.fallback.rollbacks) == 0

    once = roll(moved, jnp.float32(6.1), 0.2, 2)  # with patience 2: one epoch above is a spike
    chex.assert_trees_all_equal(once.params, moved.params)
    assert int(once.fallback.epochs_above) == 1 and int(once.fallback.rollbacks) == 0
    assert int(roll(once, jnp.float32(5.5), 0.2, 2).fallback.epochs_above) == 0  # recovered
    twice = roll(once, jnp.float32(6.1), 0.2, 2)  # the second in a row rolls back
    chex.assert_trees_all_equal(twice.params, best.params)
    assert int(twice.fallback.epochs_above) == 0 and int(twice.fallback.rollbacks) == 1
    assert int(roll(moved, jnp.float32(jnp.nan), 0.2, 2).fallback.rollbacks) == 1  # at once


def test_rollback_recovers_from_divergence_across_a_resume(tmp_path):
    config = tiny_rect_config()
    config.data.num_val, config.rollback_tolerance = 32, 0.5
    config.learning_rate = 1e30  # every epoch diverges: each rolls back to the start
    short = config.copy_and_resolve_references()
    short.num_epochs = 2
    training.train(short, tmp_path)
    states = training.train(config, tmp_path)  # resumes at 2 with the checkpointed fallback
    fresh = training.init_states(config, models.build_model(config),
                                 training.make_optimizer(config))
    chex.assert_trees_all_equal(states.params, fresh.params)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/rollbacks"] for r in records] == [1, 2, 3, 4]
    assert plotting.rollback_epochs(records) == [0, 1, 2, 3]  # marked in the curves
    assert (tmp_path / "figures" / "training_curves.png").stat().st_size > 0


@pytest.mark.parametrize("jit", [False, True])
def test_restart_if_stuck_starts_afresh_only_on_check_epochs_if_never_below_the_threshold(jit):
    config = tiny_rect_config()
    config.rollback_tolerance, config.restart_above = 0.2, 5.0
    model, optimizer = models.build_model(config), training.make_optimizer(config)
    def init(init_key):
        return training.init_state(config, model, optimizer, init_key, jax.random.PRNGKey(9))

    state = init(jax.random.PRNGKey(0))
    grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    moved = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                          epoch=jnp.int32(3), step=jnp.int32(7),
                          fallback=state.fallback.replace(rollbacks=jnp.int32(2)))
    fresh = init(jax.random.PRNGKey(1))
    restart = training.restart_if_stuck
    restart = jax.jit(restart) if jit else restart
    for val_loss, every in ((4.0, 4), (6.0, 3), (6.0, 5)):  # below it, or not a check epoch
        kept = restart(moved, jnp.float32(val_loss), fresh, 5.0, every)
        chex.assert_trees_all_equal(kept, moved)
    was_good = moved.replace(fallback=moved.fallback.replace(val_loss=jnp.float32(4.0)))
    for spike in (6.0, jnp.nan):  # once below the threshold: a spike is rollback's to mend
        kept = restart(was_good, jnp.float32(spike), fresh, 5.0, 4)
        chex.assert_trees_all_equal(kept, was_good)
    for bad in (6.0, jnp.nan):  # epoch 3 is the end of every 4th (and 2nd) epoch
        new = restart(moved, jnp.float32(bad), fresh, 5.0, 4)
        chex.assert_trees_all_equal(new.params, fresh.params)
        chex.assert_trees_all_equal(new.opt_state, fresh.opt_state)  # Adam's count too
        chex.assert_trees_all_equal(new.fallback.params, fresh.params)
        assert float(new.fallback.val_loss) == np.inf and int(new.fallback.rollbacks) == 2
        assert int(new.restarts) == 1
        chex.assert_trees_all_equal((new.epoch, new.step, new.key),
                                    (moved.epoch, moved.step, moved.key))


def test_stuck_replicas_restart_on_schedule_across_a_resume(tmp_path):
    config = tiny_rect_config()
    config.data.num_val, config.restart_above, config.restart_every = 32, 1e-3, 2
    short = config.copy_and_resolve_references()
    short.num_epochs = 2
    training.train(short, tmp_path)
    states = training.train(config, tmp_path)  # resumes at 2 with the checkpointed count
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/restarts"] for r in records] == [0, 1, 1, 2]
    # the last restart, after epoch 3, drew fresh parameters from that epoch's key
    train_key = rng.replica_keys(config.seed, "train", 1)[0]
    restart_key = jax.random.fold_in(jax.random.fold_in(train_key, 3), 3)
    fresh = training.init_state(config, models.build_model(config),
                                training.make_optimizer(config), restart_key, train_key)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[0], states.params),
                                fresh.params, atol=1e-6)  # compiled vs op by op


def test_a_replica_restarted_after_a_non_finite_epoch_trains_on(tmp_path):
    config = tiny_rect_config()
    config.data.num_val, config.restart_above, config.restart_every = 32, 1e-3, 1
    config.learning_rate = 1e30  # every epoch diverges; each restart recovers (no rollback)
    training.train(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/restarts"] for r in records] == [1, 2, 3, 4]
    assert not np.isfinite(records[-1]["train/loss_per_pixel"])
