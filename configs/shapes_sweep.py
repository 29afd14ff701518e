"""Rate-distortion on shapes with source 003's modified VAE (N(0, 0.5^2) noise on z in
training): four betas x two seeds trained at once (8 replicas on the leading axis),
a short schedule from scratch:

    python train.py --config=configs/shapes_sweep.py
    python eval.py --ckpt=runs/shapes_sweep   # eval/rate_distortion.png, eval/beta_<b>/

Beside the KL, the plot shows the Gaussian-channel estimate of the information that
crosses the noisy channel (the source's ~10.9 bits at beta = 10).
"""

from configs import shapes_noisy


def get_config():
    c = shapes_noisy.get_config()
    c.name = "shapes_sweep"
    c.sweep_betas = (1.0, 3.0, 10.0, 30.0)
    c.num_seeds = 2  # per beta
    c.num_epochs = 10
    c.checkpoint_every = 2
    return c
