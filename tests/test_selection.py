"""Best of N seeds (selection.py): the choice follows the logged validation losses, and the
chosen run is exactly a plain run of the chosen seed."""

import json

import chex
import numpy as np
import pytest

from tests.conftest import tiny_rect_config
from vaeshapes import evaluation, selection, training
from vaeshapes.validation import UserError, validate_config


def best_of_config():
    config = tiny_rect_config()
    config.num_epochs = 5
    config.data.num_val = 32
    config.select_candidates = 2
    config.select_at_epoch = 3
    config.select_window_epochs = 2
    return config


def test_the_lowest_val_loss_is_chosen_and_finished_like_a_plain_run(tmp_path):
    config = best_of_config()
    states = selection.train_best_of(config, tmp_path / "race")

    record = json.loads((tmp_path / "race" / selection.SELECTION_FILE).read_text())
    losses = {}
    for seed in (0, 1):
        lines = (tmp_path / "race" / "candidates" / f"seed_{seed}" / "metrics.jsonl")
        logged = {r["epoch"]: r["val/loss_nats_per_image"]
                  for r in map(json.loads, lines.read_text().splitlines())}
        assert sorted(logged) == [0, 1, 2]  # stopped at epoch 3
        losses[seed] = (logged[1] + logged[2]) / 2
    np.testing.assert_allclose([record["val_loss_nats_per_image"][s] for s in ("0", "1")],
                               [losses[0], losses[1]], rtol=1e-12)
    chosen = min(losses, key=losses.get)
    assert record["chosen_seed"] == chosen and losses[0] != losses[1]
    starts = [json.loads(line)["start_epoch"] for line in
              (tmp_path / "race" / training.ENVIRONMENT_LOG).read_text().splitlines()]
    assert starts == [0, 3]  # the candidate's start, then its continuation from epoch 3

    plain = selection.candidate_config(config, chosen)
    assert plain.select_candidates == 1 and plain.seed == chosen
    reference = training.train(plain, tmp_path / "plain")
    chex.assert_trees_all_equal(states.params, reference.params)
    chex.assert_trees_all_equal(states.opt_state, reference.opt_state)
    assert ((tmp_path / "race" / "metrics.jsonl").read_text()
            == (tmp_path / "plain" / "metrics.jsonl").read_text())

    again = selection.train_best_of(config, tmp_path / "race")  # finished: nothing retrains
    chex.assert_trees_all_equal(again.params, states.params)
    assert evaluation.evaluate(tmp_path / "race", iwae_ks=(1,))["selection"] == record


def test_a_diverged_candidate_is_dropped(tmp_path, monkeypatch):
    def fake_train(config, workdir, stop_at):  # seed 1 diverges, seed 0 logs a loss
        if config.seed == 1:
            raise training.NonFiniteError("non-finite loss")
        (workdir / "checkpoints" / str(stop_at)).mkdir(parents=True)
        (workdir / "metrics.jsonl").write_text(
            json.dumps({"epoch": stop_at - 1, selection.LOGGED_VAL_KEY: 5.0}) + "\n")

    monkeypatch.setattr(training, "train", fake_train)
    record = selection.choose(best_of_config(), tmp_path)
    assert record["chosen_seed"] == 0 and record["dropped_nonfinite"] == [1]
    assert record["val_loss_nats_per_image"] == {"0": 5.0}
    assert (tmp_path / "checkpoints" / "3").is_dir()  # the chosen candidate, copied

    monkeypatch.setattr(selection, "candidate_seeds", lambda config: [1])
    with pytest.raises(training.NonFiniteError, match="every candidate"):
        selection.choose(best_of_config(), tmp_path / "all_diverge")


def test_a_workdir_with_another_run_is_refused(tmp_path, monkeypatch):
    config = best_of_config()
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="did not select among seeds"):
        selection.train_best_of(config, tmp_path)
    (tmp_path / "candidates").mkdir()  # a selection whose copy was interrupted: redone
    monkeypatch.setattr(selection, "choose", lambda config, workdir: {"chosen_seed": 1})
    monkeypatch.setattr(training, "train", lambda config, workdir: config.seed)
    assert selection.train_best_of(config, tmp_path) == 1
    (tmp_path / selection.SELECTION_FILE).write_text(json.dumps(
        {"chosen_seed": 7, "at_epoch": 3}))
    with pytest.raises(UserError, match="chose seed 7 at epoch 3, not one of"):
        selection.train_best_of(config, tmp_path)


def test_a_corrupt_selection_record_is_one_error(tmp_path):
    (tmp_path / selection.SELECTION_FILE).write_text("{not json")
    with pytest.raises(UserError, match="is not a selection record"):
        selection.train_best_of(best_of_config(), tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("select_candidates", 0, "select_candidates = 0: must be an integer"),
    ("num_seeds", 2, "needs config.num_seeds = 1"),
    ("data.num_val", 0, "needs a validation split"),
    ("select_at_epoch", 5, "must come before the end of the run"),
    ("select_window_epochs", 4, "must hold a logged val loss"),
])
def test_bad_selection_settings_are_named(field, value, message):
    config = best_of_config()
    validate_config(config)
    group, _, name = field.rpartition(".")
    (config[group] if group else config)[name] = value
    with pytest.raises(UserError, match=message):
        validate_config(config)


def test_window_without_logs_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 0, "val/loss_nats_per_image": 1.0}) + "\n")
    assert selection.window_val_loss(path, 1, 1) == 1.0
    with pytest.raises(UserError, match="logs no val/loss_nats_per_image in epochs 1..1"):
        selection.window_val_loss(path, 2, 1)
