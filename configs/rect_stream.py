"""Source 000's exact model and schedule, but streaming: fresh images every epoch.

The source trains 1000 epochs over one fixed set of 1000 images and overfits it. Here
every epoch draws 1000 new images from the generator (inside the compiled step), so
the model sees 1M distinct draws; nothing else changes:

    python train.py --config=configs/rect_stream.py
    python eval.py --ckpt=runs/rect_stream

One of the 5 seeds tried never leaves the colour-blind plateau (~80 nats per image).
Adding ``--config.data.num_val=1000 --config.restart_above=60 --config.restart_every=300``
restarted it at epoch 299 and left the others bit-identical (README, "streaming data
and likelihood bounds"). It is an override, so that this config keeps the source's schedule.
"""

from configs import rect


def get_config():
    c = rect.get_config()
    c.name = "rect_stream"
    c.data.stream = True
    return c
