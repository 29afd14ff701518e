"""rect_best, second stage: a fresh autoregressive prior with random Fourier features,
fitted to a trained rect_best model whose encoder and decoder stay fixed.

    python train.py --config=configs/rect_best.py            # stage 1 -> runs/rect_best
    python train.py --config=configs/rect_best_refit.py      # stage 2 -> runs/rect_best_refit
    python eval.py --ckpt=runs/rect_best_refit

Why: the prior trained with the model has to follow codes that spread over +-40 while
each posterior is ~1 wide; sin/cos of random projections of z_<d let its conditionals
switch on that short scale. Trained jointly they did not help (the encoder rearranges
the codes), fitted afterwards they do (docs/rect_best_search.md, "Random Fourier
features"). With the encoder fixed, the ELBO's gradient for the prior is that of the
log-likelihood of posterior samples, so this is maximum likelihood on the codes.

The two stages together, keeping the one with the lower validation loss, are the recipe
that meets issue 8's targets: on 16 new runs (an H200, --config.num_seeds=16) valid prior
samples went from 89.96% to 95.55% on average (README, "The recipe on sixteen new runs").
"""

from configs import rect_best


def get_config():
    c = rect_best.get_config()
    c.name = "rect_best_refit"
    c.init_from = "runs/rect_best"  # the stage-1 workdir; pass its --config.seed and
    # --config.num_seeds too: every replica gets a prior of its own
    c.train_only_prior = True  # encoder and decoder fixed; the prior starts fresh
    c.model.prior_fourier_features = 512
    c.model.prior_fourier_scale = 0.3  # 0.1 and 1.0 fitted worse (search log)
    c.batch_size = 256
    c.num_epochs = 3750  # 60,000 steps of 256 codes (20,000 fitted worse; search log)
    c.learning_rate = 1e-3
    c.lr_schedule = "cosine"
    c.lr_warmup_epochs = 0
    c.rollback_tolerance = 0.0
    c.restart_above = 0.0  # a restart would redraw the fixed encoder and decoder too
    c.log_every = 50
    c.checkpoint_every = 250
    return c
