"""Best of N seeds: train candidate seeds to an early epoch, finish only the one with the
lowest validation loss (no test data).

Layout: ``<workdir>/candidates/seed_<s>/`` holds each candidate, a plain run of
``config.seed = s`` stopped at ``config.select_at_epoch``; ``<workdir>/selection.json``
records the choice; ``<workdir>`` itself is the chosen candidate's run, copied there and
trained to the end, so ``eval.py --ckpt=<workdir>`` evaluates it and its numbers are
those of a plain run of the chosen seed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vaeshapes import checkpoints, training
from vaeshapes.validation import UserError, validate_config

CANDIDATES_DIR = "candidates"
SELECTION_FILE = checkpoints.SELECTION_FILE
LOGGED_VAL_KEY = "val/loss_nats_per_image"  # train.py's one-draw estimate


def candidate_seeds(config) -> list[int]:
    return list(range(config.seed, config.seed + config.select_candidates))


def candidate_config(config, seed: int):
    """``config`` as a plain run of ``seed`` (selection off)."""
    candidate = config.copy_and_resolve_references()
    candidate.unlock()
    candidate.seed = seed
    candidate.select_candidates = 1
    candidate.lock()
    return candidate


def window_val_loss(metrics_path: Path, at_epoch: int, window: int) -> float:
    """Mean logged validation loss (nats per image) of epochs at_epoch - window ..
    at_epoch - 1, the last ones trained before the checkpoint at ``at_epoch``."""
    losses = [r[LOGGED_VAL_KEY] for r in map(json.loads, metrics_path.read_text().splitlines())
              if at_epoch - window <= r["epoch"] < at_epoch and LOGGED_VAL_KEY in r]
    if not losses:
        raise UserError(f"{metrics_path} logs no {LOGGED_VAL_KEY} in epochs "
                        f"{at_epoch - window}..{at_epoch - 1}")
    return float(np.mean(losses))


def choose(config, workdir: Path) -> dict:
    """Trains the candidates not yet at ``select_at_epoch`` (each resumable; one that
    diverges is dropped), copies the one with the lowest ``window_val_loss`` into
    ``workdir``; returns the selection record (also written to ``selection.json``, last,
    so an interrupted copy is redone)."""
    at, window = config.select_at_epoch, config.select_window_epochs
    losses, dropped = {}, []
    for i, seed in enumerate(candidate_seeds(config)):
        run = workdir / CANDIDATES_DIR / f"seed_{seed}"
        if not any(e >= at for e in checkpoints.saved_epochs(run / checkpoints.CHECKPOINT_DIR)):
            training.say(f"Candidate {i + 1} of {config.select_candidates}: seed {seed}, "
                         f"epochs 0..{at} in {run}")
            try:
                training.train(candidate_config(config, seed), run, stop_at=at)
            except training.NonFiniteError as e:
                training.say(f"Candidate seed {seed} dropped: {e}")
                dropped.append(seed)
                continue
        losses[seed] = window_val_loss(run / "metrics.jsonl", at, window)
    if not losses:
        raise training.NonFiniteError(f"every candidate (seeds {dropped}) diverged before "
                                      f"epoch {at}")
    chosen = min(losses, key=losses.get)
    shutil.copytree(workdir / CANDIDATES_DIR / f"seed_{chosen}", workdir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".lock"))
    record = {"chosen_seed": chosen, "at_epoch": at, "window_epochs": window,
              "val_loss_nats_per_image": {str(s): v for s, v in losses.items()},
              "dropped_nonfinite": dropped}
    (workdir / SELECTION_FILE).write_text(json.dumps(record, indent=2))
    training.say(f"Chose seed {chosen} (val loss {losses[chosen]:.3f} nats per image, mean "
                 f"of epochs {at - window}..{at - 1}; others: "
                 + ", ".join(f"seed {s} {v:.3f}" for s, v in losses.items() if s != chosen)
                 + ")")
    return record


def train_best_of(config, workdir: str | Path) -> training.TrainState:
    """Chooses a seed (``choose``, unless ``workdir`` records one) and trains it to the
    end in ``workdir``; a re-run resumes whichever stage was interrupted."""
    validate_config(config)
    workdir = Path(workdir)
    record_path = workdir / SELECTION_FILE
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text())
            chosen, at = record["chosen_seed"], record["at_epoch"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{record_path} is not a selection record ({type(e).__name__}); "
                            "delete it to choose again, or use another --workdir") from e
        seeds = candidate_seeds(config)
        if chosen not in seeds or at != config.select_at_epoch:
            raise UserError(f"{record_path} chose seed {chosen} at epoch {at}, not one of this "
                            f"config's candidates (seeds {seeds[0]}..{seeds[-1]} at epoch "
                            f"{config.select_at_epoch}); use another --workdir")
    else:
        if ((workdir / checkpoints.CHECKPOINT_DIR).is_dir()
                and not (workdir / CANDIDATES_DIR).is_dir()):  # else: a copy interrupted
            raise UserError(f"{workdir} holds a run that did not select among seeds; use "
                            "another --workdir")
        workdir.mkdir(parents=True, exist_ok=True)
        with training.WorkdirLock(workdir):
            record = choose(config, workdir)
    return training.train(candidate_config(config, record["chosen_seed"]), workdir)
