"""Trains a VAE: ``python train.py --config=configs/rect.py [--workdir=DIR]``."""

from absl import app, flags
from ml_collections import config_flags

from vaeshapes import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/rect.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config.name>).")


def main(argv):
    del argv
    return cli.run_train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=cli.parse_flags)
