"""Config validation: every bad field is named before anything compiles."""

import pytest

import configs
from tests.conftest import load_config, tiny_rect_config
from vaeshapes.validation import UserError, validate_config

SHIPPED = configs.available()


def test_every_config_is_shipped_and_tested():
    assert {"rect", "rect_stream", "rect_best", "rect_best_of3", "rect_best_refit", "rect_sweep",
            "shapes", "shapes_noisy", "shapes_sweep"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_are_valid(name):
    validate_config(load_config(name))


def test_loading_an_unknown_config_names_the_known_ones():
    with pytest.raises(ValueError, match="no config 'rect_typo'; configs: rect, rect_best"):
        load_config("rect_typo")


@pytest.mark.parametrize("group", ["", "data.", "model."])
def test_unknown_field_is_named(group):
    config = tiny_rect_config()
    node = config if not group else config[group[:-1]]
    node.lerning_rate = 1e-3  # a typo
    with pytest.raises(UserError, match=rf"config\.{group}lerning_rate: unknown field"):
        validate_config(config)


def test_keep_best_must_be_a_bool():
    config = tiny_rect_config()
    del config["keep_best"]
    config.keep_best = 1  # as a config file could set it
    with pytest.raises(UserError, match="keep_best"):
        validate_config(config)


@pytest.mark.parametrize("field", ["encoder_dense", "decoder_dense", "prior_hidden"])
@pytest.mark.parametrize("widths", [(0,), (16, -1), (1.5,), "wide", (True,)])
def test_dense_widths_must_be_positive_ints(field, widths):
    config = tiny_rect_config()
    del config.model[field]  # ConfigDict keeps a field's type; a config file need not
    config.model[field] = widths
    with pytest.raises(UserError, match=f"config.model.{field}"):
        validate_config(config)


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_grad_clip_norm_must_be_a_non_negative_number(value):
    config = tiny_rect_config()
    config.grad_clip_norm = value
    with pytest.raises(UserError, match="config.grad_clip_norm"):
        validate_config(config)


@pytest.mark.parametrize("field, value", [
    ("train_importance_samples", 0), ("train_importance_samples", 2.5),
    ("train_importance_samples", True),  # must be a positive int
    ("first_replica", -1), ("first_replica", 1.5), ("first_replica", True),  # int >= 0
])
def test_integer_fields_refuse_values_out_of_range_or_not_ints(field, value):
    config = tiny_rect_config()
    del config[field]  # ConfigDict keeps a field's type; a config file need not
    config[field] = value
    with pytest.raises(UserError, match=f"config.{field}"):
        validate_config(config)


@pytest.mark.parametrize("field", ["free_bits", "latent_noise_std"])
def test_importance_weighted_training_refuses_elbo_only_options(field):
    config = tiny_rect_config()
    config.train_importance_samples = 2
    validate_config(config)
    config[field] = 0.5
    with pytest.raises(UserError, match=f"config.{field}"):
        validate_config(config)


def test_elbo_encoder_needs_importance_samples():
    config = tiny_rect_config()
    config.train_elbo_encoder = True
    with pytest.raises(UserError, match="config.train_importance_samples > 1"):
        validate_config(config)
    config.train_importance_samples = 2
    validate_config(config)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_prior_components_must_be_a_non_negative_int(value):
    config = tiny_rect_config()
    del config.model["prior_components"]
    config.model.prior_components = value
    with pytest.raises(UserError, match="config.model.prior_components"):
        validate_config(config)


@pytest.mark.parametrize("value", ["flow", "", 1])
def test_prior_type_must_be_known(value):
    config = tiny_rect_config()
    del config.model["prior_type"]
    config.model.prior_type = value
    with pytest.raises(UserError, match="config.model.prior_type"):
        validate_config(config)


def test_train_only_prior_needs_a_learned_prior_and_a_trained_model():
    config = tiny_rect_config()
    config.train_only_prior = True
    config.model.prior_components = 4
    with pytest.raises(UserError, match="config.init_from"):
        validate_config(config)
    config.init_from = "runs/x"
    validate_config(config)
    config.model.prior_components = 0
    with pytest.raises(UserError, match="config.model.prior_components > 0"):
        validate_config(config)


def test_fourier_features_need_the_autoregressive_prior_and_a_positive_scale():
    config = tiny_rect_config()
    config.model.prior_fourier_features = 16
    with pytest.raises(UserError, match="prior_type = 'autoregressive'"):
        validate_config(config)
    config.model.prior_components, config.model.prior_type = 4, "autoregressive"
    validate_config(config)
    config.model.prior_fourier_scale = 0.0
    with pytest.raises(UserError, match="config.model.prior_fourier_scale = 0.0: must be"):
        validate_config(config)
    config.model.prior_fourier_scale, config.model.prior_fourier_features = 0.3, -1
    with pytest.raises(UserError, match="config.model.prior_fourier_features = -1: must be"):
        validate_config(config)


def test_prior_order_must_permute_the_latent_dims_of_an_autoregressive_prior():
    config = tiny_rect_config()  # latent_dim 8
    config.model.prior_order = (7, 6, 5, 4, 3, 2, 1, 0)
    with pytest.raises(UserError, match="prior_type = 'autoregressive'"):
        validate_config(config)
    config.model.prior_components, config.model.prior_type = 4, "autoregressive"
    validate_config(config)
    for bad in [(0, 1, 2), (0, 1, 2, 3, 4, 5, 6, 6), (1, 2, 3, 4, 5, 6, 7, 8)]:
        config.model.prior_order = bad
        with pytest.raises(UserError, match="must be a permutation of 0..7"):
            validate_config(config)


def test_chain_order_needs_a_trained_model_and_one_replica():
    config = tiny_rect_config()
    config.model.prior_order = ("chain",)
    with pytest.raises(UserError, match="prior_type = 'autoregressive'"):
        validate_config(config)
    config.model.prior_components, config.model.prior_type = 4, "autoregressive"
    with pytest.raises(UserError, match="needs config.init_from"):
        validate_config(config)
    config.init_from = "runs/x"
    validate_config(config)
    config.num_seeds = 2
    with pytest.raises(UserError, match="one order per run: set config.num_seeds = 1"):
        validate_config(config)


def test_learned_prior_refuses_free_bits():
    config = tiny_rect_config()
    config.model.prior_components = 4
    validate_config(config)
    config.free_bits = 0.5
    with pytest.raises(UserError, match="config.free_bits"):
        validate_config(config)


@pytest.mark.parametrize("threshold, period, value", [
    ("rollback_tolerance", "rollback_patience", 1.0), ("restart_above", "restart_every", 40.0)])
def test_rollback_and_restart_need_a_valid_threshold_period_and_validation_split(
        threshold, period, value):
    config = tiny_rect_config()
    config[threshold] = -1.0
    with pytest.raises(UserError, match=f"config.{threshold} = -1.0: must be"):
        validate_config(config)
    config[threshold] = value
    with pytest.raises(UserError, match=rf"config.{threshold} = {value} compares .*num_val > 0"):
        validate_config(config)
    config.data.num_val = 32
    validate_config(config)
    config[period] = 0
    with pytest.raises(UserError, match=f"config.{period}"):
        validate_config(config)
