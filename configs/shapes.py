"""Source 003, standard VAE: 28x28 binary circles/triangles/squares, Bernoulli decoder.

15,000 images split 70/15/15 (stratified by class); 50 epochs, batch 128, Adam 1e-3:

    python train.py --config=configs/shapes.py
    python eval.py --ckpt=runs/shapes
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "shapes"  # default workdir is runs/<name>
    c.seed = 0
    c.num_seeds = 1
    c.first_replica = 0  # k > 0: train replicas k..k+num_seeds-1 of this seed (rect.py)
    c.num_epochs = 50
    c.batch_size = 128  # the last partial batch of each epoch is dropped (static shapes)
    c.learning_rate = 1e-3  # Adam
    c.latent_dim = 8
    c.beta = 1.0
    c.sweep_betas = ()  # non-empty: train num_seeds replicas at each of these betas at once
    c.latent_noise_std = 0.0  # N(0, s^2) added to z before decoding, training only
    c.info_noise_std = 0.5  # sigma_n of the information estimate when latent_noise_std is 0
    c.log_every = 1
    c.checkpoint_every = 5
    c.keep_checkpoints = 3
    c.keep_best = True  # also keep the checkpoint with the best val loss in <workdir>/best
    c.init_from = ""
    c.eval_batch_size = 750
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
    c.restart_every = 50  # (needs data.num_val > 0)
    # Best of N seeds, off by default (see configs/rect.py; vaeshapes/selection.py)
    c.select_candidates = 1
    c.select_at_epoch = 10
    c.select_window_epochs = 5

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapes"
    c.data.num_train = 10_500
    c.data.num_val = 2_250
    c.data.num_test = 2_250
    c.data.stream = False  # True: fresh train images every epoch (no fixed train set)

    # Conv 32 s2 -> Conv 64 s2 -> Dense 16 -> mu, logvar; Dense 7*7*64 -> ConvT 64 s2
    # -> ConvT 32 s2 -> ConvT 1 (logits).
    c.model = ml_collections.ConfigDict()
    c.model.num_classes = 0  # binary pixels, Bernoulli decoder on logits
    c.model.embed_dim = 0
    c.model.encoder_convs = ((32, 2), (64, 2))
    c.model.encoder_dense = (16,)
    c.model.decoder_dense = ()  # ReLU dense layers between z and the next layer
    c.model.decoder_input_shape = (7, 7, 64)
    c.model.decoder_dense_relu = True
    c.model.decoder_convs = ((64, 2), (32, 2))
    c.model.conv_impl = "patches"  # or "xla" (flax nn.Conv): same function, slower on CPU
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
