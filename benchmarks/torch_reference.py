"""Our training speed against a straightforward PyTorch port, side by side in one run.

    pip install torch  # not a dependency of the project; CPU build is enough
    python benchmarks/torch_reference.py [--configs=rect,shapes] [--torch_epochs=rect:20,shapes:2]
        [--json=benchmarks/torch_reference.json]

The speed issue states its targets against a PyTorch implementation of the sources on
"this machine" (rect: ~90 s for the 1000 epochs) and the source's Keras (shapes:
~3.3 s/epoch). This machine is shared and its speed drifts from day to day, so this
script measures both sides now: for each config it trains the PyTorch port (the same
layers, built from the config, with the same parameter count; eager mode, one Adam
step per batch, as the sources do) for a few epochs and takes the median epoch, then
runs ``benchmarks/train_speed.py`` on the same config (1 seed, train.py's CPU layout)
and prints the ratio.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
from absl import app, flags
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import available  # noqa: E402
from configs import load as load_config  # noqa: E402
from vaeshapes import data, models, rng  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["rect", "shapes"], "Configs to measure.")
flags.register_validator("configs", lambda v: set(v) <= set(available()),
                         f"--configs takes {', '.join(available())}")
_TORCH_EPOCHS = flags.DEFINE_list("torch_epochs", ["rect:20", "shapes:3"],
                                  "config:epochs timed for PyTorch (median epoch reported).")
_JAX_REPEATS = flags.DEFINE_integer("jax_repeats", 3, "train_speed.py --repeats.")
_JSON = flags.DEFINE_string("json", "benchmarks/torch_reference.json", "Where to write rows.")


class TorchVAE(nn.Module):
    """The ConvVAE of ``config.model`` in PyTorch (NCHW; padding 1 for every 3x3 layer)."""

    def __init__(self, config):
        super().__init__()
        m = config.model
        height, width = data.IMAGE_SHAPES[config.data.name]
        self.embed = nn.Embedding(m.num_classes, m.embed_dim) if m.num_classes else None
        channels = m.embed_dim if m.num_classes else 1
        encoder = []
        for features, stride in m.encoder_convs:
            encoder += [nn.Conv2d(channels, features, 3, stride, padding=1), nn.ReLU()]
            channels = features
            height, width = -(-height // stride), -(-width // stride)
        encoder.append(nn.Flatten())
        size = channels * height * width
        for features in m.encoder_dense:
            encoder += [nn.Linear(size, features), nn.ReLU()]
            size = features
        self.encoder = nn.Sequential(*encoder)
        self.fc_mu = nn.Linear(size, config.latent_dim)
        self.fc_logvar = nn.Linear(size, config.latent_dim)
        decoder, size = [], config.latent_dim
        for features in m.decoder_dense:
            decoder += [nn.Linear(size, features), nn.ReLU()]
            size = features
        h, w, channels = m.decoder_input_shape
        decoder.append(nn.Linear(size, h * w * channels))
        if m.decoder_dense_relu:
            decoder.append(nn.ReLU())
        decoder.append(nn.Unflatten(1, (channels, h, w)))
        out_channels = m.num_classes or 1
        for i, (features, stride) in enumerate((*m.decoder_convs, (out_channels, 1))):
            decoder.append(nn.ConvTranspose2d(channels, features, 3, stride, padding=1,
                                              output_padding=stride - 1))
            if i < len(m.decoder_convs):
                decoder.append(nn.ReLU())
            channels = features
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x):
        h = self.embed(x).permute(0, 3, 1, 2) if self.embed is not None else x
        h = self.encoder(h)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


def neg_elbo(logits, x, mu, logvar, categorical: bool):
    """Batch mean of -log p(x|z) + KL, as the sources train."""
    if categorical:
        recon = nn.functional.cross_entropy(logits, x, reduction="sum")
    else:
        recon = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * torch.sum(torch.exp(logvar) + mu**2 - 1.0 - logvar)
    return (recon + kl) / x.shape[0]


def torch_images(config) -> torch.Tensor:
    """The config's training images as a torch tensor (int [N, H, W] or float [N, 1, H, W])."""
    splits = data.build_splits(config.data, rng.purpose_key(config.seed, "data"))
    images = np.asarray(splits["train"].images)
    if config.model.num_classes:
        return torch.from_numpy(images.astype(np.int64))
    return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def torch_epoch_seconds(config, epochs: int) -> tuple[float, int]:
    """Median seconds per epoch of the PyTorch port, and its parameter count."""
    torch.manual_seed(config.seed)
    model = TorchVAE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    images = torch_images(config)
    batches = images.shape[0] // config.batch_size
    times = []
    for _ in range(epochs + 1):  # the first epoch warms up, untimed
        t0 = time.perf_counter()
        order = torch.randperm(images.shape[0])
        for b in range(batches):
            x = images[order[b * config.batch_size:(b + 1) * config.batch_size]]
            logits, mu, logvar = model(x)
            loss = neg_elbo(logits, x, mu, logvar, bool(config.model.num_classes))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), sum(p.numel() for p in model.parameters())


def jax_row(name: str) -> dict:
    """benchmarks/train_speed.py's row for ``name`` with 1 seed, in its own process."""
    script = Path(__file__).with_name("train_speed.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        subprocess.run([sys.executable, str(script), f"--configs={name}", "--seeds=1",
                        f"--repeats={_JAX_REPEATS.value}", f"--json={out}",
                        *(["--max_batches=8"] if name == "shapes" else [])],
                       check=True, capture_output=True, text=True)
        return json.loads(out.read_text())["rows"][0]


def main(argv):
    del argv
    epochs = dict(item.split(":") for item in _TORCH_EPOCHS.value)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'config':7} {'params':>7} {'torch s/epoch':>13} {'ours s/epoch':>12} "
          f"{'torch run s':>11} {'ours run s':>10} {'speed-up':>8}")
    rows = []
    for name in _CONFIGS.value:
        config = load_config(name)
        torch_s, num_params = torch_epoch_seconds(config, int(epochs.get(name, 3)))
        ours = models.count_params(models.init_params(
            models.build_model(config), config, jax.random.PRNGKey(0)))
        if num_params != ours:
            sys.exit(f"{name}: the PyTorch port has {num_params} parameters, ours {ours}")
        jax_s = jax_row(name)
        row = dict(config=name, params=num_params, torch_epoch_s=torch_s,
                   ours_epoch_s=jax_s["epoch_s"], num_epochs=config.num_epochs,
                   speedup=torch_s / jax_s["epoch_s"], ours=jax_s)
        rows.append(row)
        print(f"{name:7} {num_params:7d} {torch_s:13.3f} {jax_s['epoch_s']:12.3f} "
              f"{torch_s * config.num_epochs:11.0f} {jax_s['run_s']:10.0f} "
              f"{row['speedup']:7.2f}x")
    Path(_JSON.value).write_text(json.dumps(dict(torch=torch.__version__, rows=rows),
                                            indent=2))


if __name__ == "__main__":
    app.run(main)
