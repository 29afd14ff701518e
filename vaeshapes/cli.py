"""What train.py and eval.py do after flag parsing: run, and turn failures into exit codes.

Exit codes: 0 success, 2 bad input (config, flags, checkpoint), 3 non-finite training.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def quiet_logs() -> None:
    """Only errors from absl logging (Orbax logs every file it writes at INFO)."""
    from absl import logging

    logging.set_verbosity(logging.ERROR)


def run_train(config, workdir: str | None) -> int:
    from vaeshapes import training
    from vaeshapes.validation import UserError

    quiet_logs()
    if config is None:
        return _fail("--config is required, e.g. --config=configs/rect.py", EXIT_USER_ERROR)
    workdir = Path(workdir) if workdir else Path("runs") / str(config.get("name", "run"))
    try:
        training.train(config, workdir)
    except UserError as e:
        return _fail(str(e), EXIT_USER_ERROR)
    except training.NonFiniteError as e:
        return _fail(str(e), EXIT_NON_FINITE)
    print(f"Done. Evaluate with: python eval.py --ckpt={workdir}", flush=True)
    return 0


def run_eval(ckpt: str | None, outdir: str | None) -> int:
    from vaeshapes import evaluation
    from vaeshapes.validation import UserError

    quiet_logs()
    if not ckpt:
        return _fail("--ckpt is required: a run's workdir or a checkpoint step folder",
                     EXIT_USER_ERROR)
    try:
        metrics = evaluation.evaluate(ckpt, outdir)
    except UserError as e:
        return _fail(str(e), EXIT_USER_ERROR)
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not key.endswith("/std"):
            print(f"{key}: {value:.6g}")
    return 0
