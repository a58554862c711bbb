"""An auxiliary loss on the text encoder: from the caption's encoding, name its emoji and style.

Trained only through the UNet's loss, cpu2's text encoder told subjects apart by little more
than their colour (`monitor.TextSeparation`, step 17,202): "pizza" sat at cosine 0.990 from
"croissant", "cat" beside "sun", "waffle" and "trophy", and an alias ("kitten") was nearest to
its own emoji's name 9% of the time. A UNet cannot draw two shapes for two prompts that
arrive as the same encoding, and the UNet's loss pays the text encoder little to tell them
apart while the UNet does not yet draw shapes: each waits for the other.

`TextAux` breaks that wait. It reads the encoder's output averaged over every position (what
the UNet's cross-attention reads) and must name the caption's emoji (one, or both halves of a
pair) and, when the caption says it, the style. It is a cosine classifier with a fixed scale,
so only the encodings' directions can separate the classes, not a growing head. The loss is
added to the UNet's with weight `Config.text_aux`; the head is training only and never
exported. The labels come with every batch (`batches.PoolBatches` / `FreshBatches`).

It must name the background colour too, when the caption says it (`Config.text_aux_colour`, the
weight of that term). Without it, cpu5-f4's encoder at step 6,400 had all but dropped the colour:
swapping "red" for "blue" moved the whole encoding 13% where swapping the subject moved it 151%,
the mean over positions named the colour no better than chance (13 of 88), and the pictures took
the asked background 5 times in 88 (chance: 8), though the pool's captions and pictures agree.
cpu2, trained without `text_aux`, learned the background first of all. An aux loss that names
only the emoji and style makes every position carry those, and the colour is crowded out.
(An A/B from step 6,800: the asked background in 82% of 44 pictures 1,000 steps later with the
colour named, 34% without.) The place a caption names ("in the top left") can be named the same
way (`Config.text_aux_place`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.data import COLOUR_NAMES, POSITION_NAMES, STYLES


class TextAux(nn.Module):
    SCALE = 10.0   # cosine logits times this: a margin the encodings must earn by their direction

    def __init__(self, width: int, n_emoji: int, colour: float = 0.0, place: float = 0.0):
        """`colour`, `place`: the weights of naming the background colour and the place (0: no head)."""
        super().__init__()
        g = torch.Generator().manual_seed(9)
        self.emoji = nn.Parameter(torch.randn(n_emoji, width, generator=g) * 0.02)
        self.style = nn.Parameter(torch.randn(len(STYLES), width, generator=g) * 0.02)
        self.colour_weight = colour
        if colour:
            g = torch.Generator().manual_seed(10)    # its own draw: the heads above stay what they were
            self.colour = nn.Parameter(torch.randn(len(COLOUR_NAMES), width, generator=g) * 0.02)
        self.place_weight = place
        if place:
            g = torch.Generator().manual_seed(11)
            self.place = nn.Parameter(torch.randn(len(POSITION_NAMES), width, generator=g) * 0.02)

    def _cosine(self, h: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """h: the text encoder's last hidden state [B, T, W]; its mean's scaled cosine to each class."""
        return self.SCALE * F.normalize(h.float().mean(1), dim=-1) @ F.normalize(head, dim=-1).T

    def logits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, T, W] -> (emoji logits, style logits)."""
        return self._cosine(h, self.emoji), self._cosine(h, self.style)

    def colour_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, T, W] -> background colour logits [B, len(COLOUR_NAMES)] (needs the colour head)."""
        return self._cosine(h, self.colour)

    def place_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, T, W] -> place logits [B, len(POSITION_NAMES)] (needs the place head)."""
        return self._cosine(h, self.place)

    def loss(self, h: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy for the emoji (a pair: half the target on each) over captions that are
        not empty, plus the style's over captions that name it, plus (with the colour and place
        heads, times their weights) the background colour's and the place's over captions that
        name them."""
        le, ls = self.logits(h)
        named, emoji = labels["named"], labels["emoji"]          # [B] bool, [B, 2] ids (-1: none)
        target = torch.zeros_like(le)
        has = emoji >= 0
        target.scatter_add_(1, emoji.clamp(min=0), has.float() / has.sum(1, keepdim=True).clamp(min=1))
        loss = le.new_zeros(())
        if named.any():
            loss = loss + -(target[named] * F.log_softmax(le[named], 1)).sum(1).mean()
        said = named & labels["said_style"]
        if said.any():
            loss = loss + F.cross_entropy(ls[said], labels["style"][said])
        if self.colour_weight:
            said = named & labels["said_colour"]
            if said.any():
                loss = loss + self.colour_weight * F.cross_entropy(self.colour_logits(h[said]), labels["colour"][said])
        if self.place_weight:
            said = named & (labels["place"] >= 0)
            if said.any():
                loss = loss + self.place_weight * F.cross_entropy(self.place_logits(h[said]), labels["place"][said])
        return loss
