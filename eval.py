"""Evaluates a checkpoint: ``python eval.py --ckpt=<workdir or step dir> [--outdir=DIR]
[--iwae_ks=1,100,1000] [--figure_seed=0] [--prior_samples=1000]``."""

from absl import app, flags

from vaeshapes import cli

_CKPT = flags.DEFINE_string("ckpt", None, "A run's workdir (latest checkpoint) or one "
                            "checkpoint step folder, e.g. runs/rect/checkpoints/1000.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Where metrics.json and figures go "
                              "(default: <workdir>/eval).")
_IWAE_KS = flags.DEFINE_list("iwae_ks", None, "Importance samples K of the test "
                             "log-likelihood bounds, e.g. 1,100,1000 (default: rect "
                             "1,100,1000; shapes 1,10).")
_FIGURE_SEED = flags.DEFINE_integer("figure_seed", 0, "The replica (seed index, of each "
                                   "beta in a sweep) whose figures and features.csv are drawn.")
_PRIOR_SAMPLES = flags.DEFINE_integer("prior_samples", None, "Prior samples per replica "
                                      "that prior/valid_rate is measured on (default "
                                      "1000: a sampling error of about 0.8 points at 93%).")


def main(argv):
    del argv
    return cli.run_eval(_CKPT.value, _OUTDIR.value, _IWAE_KS.value, _FIGURE_SEED.value,
                        _PRIOR_SAMPLES.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["ckpt"])
    app.run(main, flags_parser=cli.parse_flags)
