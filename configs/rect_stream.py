"""Source 000's exact model and schedule, but streaming: fresh images every epoch.

The source trains 1000 epochs over one fixed set of 1000 images and overfits it. Here
every epoch draws 1000 new images from the generator (inside the compiled step), so
the model sees 1M distinct draws; nothing else changes:

    python train.py --config=configs/rect_stream.py
    python eval.py --ckpt=runs/rect_stream
"""

from configs import rect


def get_config():
    c = rect.get_config()
    c.name = "rect_stream"
    c.data.stream = True
    return c
