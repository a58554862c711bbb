"""The adversarial part of the decoder phase: a patch discriminator and its losses.

A decoder trained on L1 + MSE alone draws the average of what a latent could hold: a small
decoder on 16x16x4 latents smooths the flat fills and hard outlines that tell Twemoji (flat)
from Noto (cartoon) from Fluent 3D, and the evaluation's judge reads the smudge as the wrong
style (`training.ceiling`). Latent diffusion's autoencoders add a patch-wise adversarial loss
for that reason (Esser et al. 2021, Rombach et al. 2022): the decoder is pushed to commit to
sharp, plausible detail. Only the decoder is trained against it (the encoder is frozen, so the
latent space, the latent pool and any UNet stay valid), and the discriminator never ships.

The discriminator is pix2pix's PatchGAN (Isola et al. 2017) with GroupNorm, sized for a CPU;
losses are hinge losses; the adversarial term's weight is set each step by the ratio of the
two losses' gradients at the decoder's last layer (Esser et al.), times `decoder_gan`.

Measured so far (docs/training/RUNS.md): no gain on the 128 px VAE in 300 steps, and worse on the 64 px f4
VAE in 600 (colour halos, style 64% against 85%), so the CPU recipe leaves it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Real-or-decoded logits, one per overlapping ~22x22 patch (three 4x4 convolutions of
    strides 2, 2, 1 and a last one); fully convolutional, so any picture size."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = (3, width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.Conv2d(a, b, 4, stride=2 if k < 2 else 1, padding=1))
            if k:
                layers.append(nn.GroupNorm(min(32, b // 4), b))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Conv2d(chans[-1], 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss: real patches above +1, decoded ones below -1."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last: torch.Tensor, scale: float) -> torch.Tensor:
    """`scale` x |grad rec| / |grad gan| at the decoder's last weight `last`: the adversarial term
    pulls as hard as the reconstruction, whatever the two losses' sizes (clamped, detached)."""
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last, retain_graph=True)[0]
    return (scale * g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4).detach()
