"""Evaluates a checkpoint: ``python eval.py --ckpt=<workdir or step dir> [--outdir=DIR]``."""

from absl import app, flags

from vaeshapes import cli

_CKPT = flags.DEFINE_string("ckpt", None, "A run's workdir (latest checkpoint) or one "
                            "checkpoint step folder, e.g. runs/rect/checkpoints/1000.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Where metrics.json and figures go "
                              "(default: <workdir>/eval).")
_IWAE_KS = flags.DEFINE_list("iwae_ks", None, "Importance samples K of the test "
                             "log-likelihood bounds, e.g. 1,100,1000 (default: rect "
                             "1,100,1000; shapes 1,10).")


def main(argv):
    del argv
    return cli.run_eval(_CKPT.value, _OUTDIR.value, _IWAE_KS.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["ckpt"])
    app.run(main, flags_parser=cli.parse_flags)
