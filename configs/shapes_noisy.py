"""Source 003, modified VAE: beta = 10 and N(0, 0.5^2) noise added to z in training.

From scratch (30 epochs):

    python train.py --config=configs/shapes_noisy.py
    python eval.py --ckpt=runs/shapes_noisy

As the source did (continue from the trained standard model):

    python train.py --config=configs/shapes_noisy.py --config.init_from=runs/shapes \\
        --workdir=runs/shapes_noisy_init
"""

from configs import shapes


def get_config():
    c = shapes.get_config()
    c.name = "shapes_noisy"
    c.num_epochs = 30
    c.beta = 10.0
    c.latent_noise_std = 0.5
    return c
