"""Source 000: 10x10 coloured rectangles, categorical ConvVAE (21,346 parameters).

Train (1000 epochs over 1000 fixed images, batch 32, Adam 1e-3), then evaluate:

    python train.py --config=configs/rect.py
    python eval.py --ckpt=runs/rect

Quick look: ``python train.py --config=configs/rect.py --config.num_epochs=20``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "rect"  # default workdir is runs/<name>
    c.seed = 0  # root of every random draw (data, init, training, eval)
    c.num_seeds = 1  # independent replicas trained together (params on a leading axis)
    c.first_replica = 0  # k > 0: train replicas k..k+num_seeds-1 of this seed (replica i is
    # the same in every run that trains it, so a many-seed run can be split over jobs)
    c.num_epochs = 1000
    c.batch_size = 32  # the last partial batch of each epoch is dropped (static shapes)
    c.learning_rate = 1e-3  # Adam
    c.latent_dim = 8
    c.beta = 1.0  # weight of the KL term
    c.sweep_betas = ()  # non-empty: train num_seeds replicas at each of these betas at once
    c.latent_noise_std = 0.0  # N(0, s^2) added to z before decoding, training only
    c.info_noise_std = 0.5  # sigma_n of the information estimate when latent_noise_std is 0
    c.log_every = 100  # epochs between console lines / metrics.jsonl records
    c.checkpoint_every = 100  # epochs between checkpoints (one is also written at the end)
    c.keep_checkpoints = 3  # most recent checkpoints kept
    c.keep_best = True  # also keep the checkpoint with the best val loss in <workdir>/best
    c.init_from = ""  # checkpoint to take initial params from ("" = fresh init)
    c.eval_batch_size = 500  # images per compiled batch in evaluation
    # Training aids, all off by default (the sources use none):
    c.kl_warmup_epochs = 0  # beta rises linearly from 0 over this many epochs
    c.free_bits = 0.0  # nats per latent dim: KL below it (batch mean, per dim) is not penalised
    c.lr_schedule = "constant"  # or "cosine": decay to 0 over the run (after any warm-up)
    c.lr_warmup_epochs = 0  # learning rate rises linearly from 0 over this many epochs
    c.grad_clip_norm = 0.0  # > 0: gradients scaled down to at most this global norm
    c.train_importance_samples = 1  # K > 1: train on the IWAE bound with K samples per image
    c.train_elbo_encoder = False  # with K > 1: only the decoder on the IWAE bound (PIWAE)
    c.train_only_prior = False  # with init_from: refit only the learned prior (prior_*)
    c.rollback_tolerance = 0.0  # > 0: a replica whose val loss exceeds its best times 1 + this
    # for rollback_patience epochs in a row (or is not finite) goes back to its best params and
    # Adam moments (needs data.num_val > 0)
    c.rollback_patience = 50  # rect_best's brief spikes above 1.2x its best recover within
    # 40 epochs (README); a replica that is stuck does not
    c.restart_above = 0.0  # > 0: at the end of every restart_every-th epoch, a replica whose
    # val loss (nats per image) is above this, and (with rollback) always was, starts again
    # from fresh parameters and optimiser
    c.restart_every = 50  # (needs data.num_val > 0). Both depend on the model: a run that
    # learns must be below the threshold by the check (rect_best: 40 nats at epoch 49; this
    # source model sits on an ~85-nat plateau for 40-270 epochs: 60 at epoch 299; README)
    # Best of N seeds, off by default: train seeds seed..seed+N-1 to select_at_epoch, keep
    # the one with the lowest mean logged val loss over the select_window_epochs before it,
    # finish only that one (vaeshapes/selection.py; needs data.num_val > 0)
    c.select_candidates = 1
    c.select_at_epoch = 100
    c.select_window_epochs = 100

    c.data = ml_collections.ConfigDict()
    c.data.name = "rect"
    c.data.num_train = 1000  # fixed training set, as in the source
    c.data.num_val = 0
    c.data.num_test = 1000  # fresh samples from a disjoint key
    c.data.stream = False  # True: fresh train images every epoch (no fixed train set)

    # Embed(10, 8) -> Conv 4 -> Conv 8 -> [800] -> mu, logvar; Dense 800 -> ConvT 4 -> ConvT 10.
    c.model = ml_collections.ConfigDict()
    c.model.num_classes = 10  # background + 9 colours, categorical decoder
    c.model.embed_dim = 8
    c.model.encoder_convs = ((4, 1), (8, 1))  # (features, stride), 3x3 SAME, ReLU
    c.model.encoder_dense = ()
    c.model.decoder_dense = ()  # ReLU dense layers between z and the next layer
    c.model.decoder_input_shape = (10, 10, 8)
    c.model.decoder_dense_relu = False
    c.model.decoder_convs = ((4, 1),)
    c.model.conv_impl = "rows"  # or "patches", "xla": the same function (layers.py)
    c.model.prior_components = 0  # 0: p(z) = N(0, I); M > 0: a learned mixture of M Gaussians
    c.model.prior_type = "mixture"  # or "autoregressive": prod_d of 1-d mixtures (models.py)
    c.model.prior_hidden = (256,)  # MLP widths of the autoregressive prior's conditionals
    c.model.prior_fourier_features = 0  # > 0: that many random Fourier features of z_<d
    # feed each conditional's MLP (sin and cos; models.ConditionalMixture)
    c.model.prior_fourier_scale = 1.0  # std of their frequencies, per unit of z
    c.model.prior_order = ()  # the autoregressive prior's order over z's dimensions (a
    # permutation of range(latent_dim)); (): 0, 1, ..., latent_dim - 1; ("chain",): the
    # dependency chain of init_from's codes, fixed when training starts
    return c
