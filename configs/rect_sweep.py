"""Rate-distortion on rect: source 000's model, streamed data, six betas x two seeds
trained at once (12 replicas on the leading axis; seed s starts from the same init at
every beta):

    python train.py --config=configs/rect_sweep.py
    python eval.py --ckpt=runs/rect_sweep   # eval/rate_distortion.png, eval/beta_<b>/

Rate is the KL (bits), distortion the test reconstruction term (nats per image); no
model can lie below rate + distortion = H(X) = 9.8233 nats.
"""

from configs import rect_stream


def get_config():
    c = rect_stream.get_config()
    c.name = "rect_sweep"
    c.sweep_betas = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    c.num_seeds = 2  # per beta
    c.num_epochs = 300
    c.log_every = 20
    c.checkpoint_every = 50
    return c
