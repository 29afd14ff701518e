"""What train.py and eval.py do after flag parsing: run, and turn failures into exit codes.

Exit codes: 0 success, 2 bad input (config, flags, checkpoint, workdir in use),
3 non-finite training, 75 interrupted by SIGTERM/SIGINT (checkpointed; re-run resumes).
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again (the same command resumes)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing where every failure is one line on stderr and exit code 2.

    ml_collections raises plain exceptions (with tracebacks) for a config file that
    does not load or an override of a field that does not exist.
    """
    from absl import flags

    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            flags.FLAGS.config.keys()  # config_flags defers a load failure to first use
        return rest
    except flags.Error as e:
        message = str(e)
    except (AttributeError, KeyError) as e:
        override = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.")), "")
        message = f"unknown config field in {override or 'an override'}: {e}"
    except (OSError, SyntaxError, ImportError, ValueError, TypeError) as e:
        config = next((a for a in argv[1:] if a.startswith("--config=")), "--config")
        path = config.partition("=")[2].split(":")[0]  # config_flags allows file.py:arg
        if path and not Path(path).is_file():
            message = f"{config}: no such config file"
        else:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            message = f"{config}: cannot load the config file ({type(e).__name__}: {first})"
    sys.exit(_fail(message, EXIT_USER_ERROR))


def quiet_logs() -> None:
    """Only errors from absl logging (Orbax logs every file it writes at INFO)."""
    from absl import logging

    logging.set_verbosity(logging.ERROR)


def run_train(config, workdir: str | None, distributed: dict | None = None,
              split_cpu: bool = True, split_cpu_batch: bool = False) -> int:
    """Trains; ``distributed`` holds ``parallel.initialize_distributed``'s arguments;
    ``split_cpu``, ``split_cpu_batch``: ``parallel.split_cpu_cores`` and its
    ``split_batch`` (single-process runs only)."""
    from vaeshapes import parallel, selection, training
    from vaeshapes.validation import UserError, validate_config

    quiet_logs()
    if config is None:
        return _fail("--config is required, e.g. --config=configs/rect.py", EXIT_USER_ERROR)
    if split_cpu_batch and not split_cpu:
        return _fail("--split_cpu_batch splits the cores that --split_cpu leaves idle; drop "
                     "--nosplit_cpu or --split_cpu_batch", EXIT_USER_ERROR)
    workdir = Path(workdir) if workdir else Path("runs") / str(config.get("name", "run"))
    try:
        validate_config(config)
        joined = parallel.initialize_distributed(**(distributed or {}))
        if joined and config.select_candidates > 1:
            raise UserError(f"config.select_candidates = {config.select_candidates} runs in "
                            "one process; train the candidate seeds in a multi-process run "
                            "one by one instead")
        if split_cpu and not joined:
            parallel.split_cpu_cores(training.num_replicas(config), config.batch_size,
                                     split_cpu_batch)
        if config.select_candidates > 1:
            selection.train_best_of(config, workdir)
        else:
            training.train(config, workdir)
    except UserError as e:
        return _fail(str(e), EXIT_USER_ERROR)
    except training.NonFiniteError as e:
        return _fail(str(e), EXIT_NON_FINITE)
    except training.Interrupted as e:
        return _fail(f"interrupted: {e}", EXIT_INTERRUPTED)
    if parallel.is_main_process():
        print(f"Done. Evaluate with: python eval.py --ckpt={workdir}", flush=True)
    return 0


def run_eval(ckpt: str | None, outdir: str | None, iwae_ks: list[str] | None = None,
             figure_seed: int = 0, prior_samples: int | None = None) -> int:
    from vaeshapes import evaluation
    from vaeshapes.validation import UserError

    quiet_logs()
    if not ckpt:
        return _fail("--ckpt is required: a run's workdir or a checkpoint step folder",
                     EXIT_USER_ERROR)
    ks = None
    if iwae_ks:
        if not all(k.isdigit() and int(k) > 0 for k in iwae_ks):
            return _fail(f"--iwae_ks={','.join(iwae_ks)}: must be positive integers, e.g. "
                         "1,100,1000", EXIT_USER_ERROR)
        ks = tuple(int(k) for k in iwae_ks)
    if figure_seed < 0:
        return _fail(f"--figure_seed={figure_seed}: must be a seed index, 0 or more",
                     EXIT_USER_ERROR)
    if prior_samples is not None and prior_samples < 1:
        return _fail(f"--prior_samples={prior_samples}: must be 1 or more", EXIT_USER_ERROR)
    try:
        metrics = evaluation.evaluate(ckpt, outdir, ks, figure_seed,
                                      prior_samples or evaluation.NUM_PRIOR_SAMPLES)
    except UserError as e:
        return _fail(str(e), EXIT_USER_ERROR)
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not key.endswith("/std"):
            print(f"{key}: {value:.6g}")
    for beta, run in metrics.get("per_beta", {}).items():
        print(f"beta {beta}: distortion {run['test/recon_nats_per_image']:.4g} nats, rate "
              f"{run['info/kl_bits']:.4g} bits, neg ELBO "
              f"{run['test/neg_elbo_nats_per_image']:.4g} nats (means over seeds)")
    return 0
