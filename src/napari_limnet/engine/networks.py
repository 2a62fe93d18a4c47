"""The three LIM-Net networks, all working on fixed ``CROP x CROP`` windows.

- ``InteractionNet``: a 2D U-Net; (image channels, positive / negative click maps, box map,
  previous mask of the slice) -> mask logits. ``InteractionEnsemble``: several of them, their
  probabilities averaged.
- ``MemoryNet``: STCN-style propagation. Small named steps (``encode_key``, ``encode_value``,
  ``read_memory``, ``segment``) rather than one large forward, so inference can cache keys and
  values of memory slices.
- ``FusionScorer``: (image, previous round's mask, this round's mask) -> logit of
  "the previous mask is better".

Image input is always ``IMG_CH`` channels made by ``preprocess.normalise`` (a global and a
click-relative view of the intensities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMG_CH = 2  # see preprocess.normalise
# the interaction network's first convolution (image, clicks, box, prev mask, context slices)
FIRST_CONV = "encoder.l1.0.0.weight"
CROP = 128  # side of the network window in pixels
WIDTHS = (16, 32, 64, 128)  # the interaction network's channels per level (the shipped ones)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(max(1, cout // 8), cout),
        nn.SiLU(inplace=True),
    )


class _Block(nn.Module):
    """Two 3x3 convolutions with a residual connection (first one may downsample)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = _conv(cin, cout, stride)
        self.c2 = nn.Sequential(
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(max(1, cout // 8), cout)
        )
        self.skip = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.c2(self.c1(x)) + self.skip(x))


class _Encoder(nn.Module):
    """Four-level encoder: returns features at 1, 1/2, 1/4, 1/8 resolution."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int], light: bool = False) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        # light: a single convolution at full resolution (the memory network runs per slice)
        self.l1 = _conv(cin, w1) if light else nn.Sequential(_conv(cin, w1), _Block(w1, w1))
        self.l2 = _Block(w1, w2, 2)
        self.l3 = _Block(w2, w3, 2)
        self.l4 = nn.Sequential(_Block(w3, w4, 2), _Block(w4, w4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.l1(x)
        f2 = self.l2(f1)
        f3 = self.l3(f2)
        f4 = self.l4(f3)
        return [f1, f2, f3, f4]


class _Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.block = _Block(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], 1))


class _Decoder(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.mid = _Block(cin, w4)
        self.u3 = _Up(w4, w3, w3)
        self.u2 = _Up(w3, w2, w2)
        self.u1 = _Up(w2, w1, w1)
        self.out = nn.Conv2d(w1, 1, 1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.mid(x)
        x = self.u3(x, skips[2])
        x = self.u2(x, skips[1])
        x = self.u1(x, skips[0])
        return self.out(x)


class InteractionNet(nn.Module):
    """2D U-Net: ``(B, IMG_CH + 4, H, W)`` = image, pos, neg, box, prev mask -> ``(B, 1, H, W)``.

    ``context`` > 0 appends the image channels of the ``context`` slices on each side
    (``IMG_CH`` per slice, ordered z-c .. z-1, z+1 .. z+c, normalised like the clicked slice):
    a 2.5D input, so edges that one slice barely shows, and the object's end, can be seen
    across slices. The first ``IMG_CH + 4`` channels mean the same for every ``context``.
    """

    IN_CH = IMG_CH + 4  # without context

    def __init__(self, widths: tuple[int, ...] = WIDTHS, context: int = 0) -> None:
        super().__init__()
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        if len(widths) != 4 or min(widths) < 8 or any(w % 8 for w in widths):
            raise ValueError(f"widths must be 4 multiples of 8, got {tuple(widths)}")
        self.widths = tuple(int(w) for w in widths)
        self.context_slices = context
        self.in_ch = self.IN_CH + 2 * context * IMG_CH
        self.encoder = _Encoder(self.in_ch, widths)
        self.context = nn.Sequential(_Block(widths[3], widths[3]), _Block(widths[3], widths[3]))
        self.decoder = _Decoder(widths[3], widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        return self.decoder(self.context(f[3]), f)


class InteractionEnsemble(nn.Module):
    """Interaction networks trained apart, used as one: the mean of their probabilities.

    Each member reads the channels of its own input width from the widest member's input
    (``context_slices`` is the widest member's): a one-slice member the first ``IN_CH``, a
    2.5D member of context c the slices z-c .. z-1, z+1 .. z+c. Two networks trained with
    different recipes err on different slices, so their mean is better than either
    (``docs/decisions.md``, "Interaction ensemble").
    """

    def __init__(
        self,
        contexts: tuple[int, ...] | list[int],
        widths: list[tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        if len(contexts) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(contexts)}")
        widths = list(widths) if widths is not None else [WIDTHS] * len(contexts)
        if len(widths) != len(contexts):
            raise ValueError(f"{len(contexts)} members but {len(widths)} widths")
        self.members = nn.ModuleList(
            InteractionNet(w, context=int(c)) for c, w in zip(contexts, widths, strict=True)
        )
        self.context_slices = max(m.context_slices for m in self.members)
        self._channels = [self._channels_of(m.context_slices) for m in self.members]

    def _channels_of(self, c: int) -> list[int]:
        """Indices of a context-``c`` member's channels in the widest member's input."""
        big, base = self.context_slices, InteractionNet.IN_CH
        before = range(big - c, big)  # slices z-c .. z-1 among z-big .. z-1
        after = range(big, big + c)  # slices z+1 .. z+c among z+1 .. z+big
        return [*range(base)] + [
            base + k * IMG_CH + i for k in (*before, *after) for i in range(IMG_CH)
        ]

    @classmethod
    def of(cls, nets: list[InteractionNet]) -> InteractionEnsemble:
        """The ensemble of these networks themselves (not copies: training one trains it)."""
        ens = cls([n.context_slices for n in nets], [n.widths for n in nets])
        ens.members = nn.ModuleList(nets)
        return ens

    @property
    def contexts(self) -> list[int]:
        return [m.context_slices for m in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.stack(
            [
                torch.sigmoid(m(x[:, ch]).float())
                for m, ch in zip(self.members, self._channels, strict=True)
            ]
        ).mean(0)
        # back to logits: the engine thresholds and resamples logits like a single network's
        return torch.logit(prob.clamp(1e-6, 1 - 1e-6))


def context_of(state: dict[str, torch.Tensor]) -> int:
    """The ``context_slices`` of an ``InteractionNet`` state dict (from its input width)."""
    return (state[FIRST_CONV].shape[1] - InteractionNet.IN_CH) // (2 * IMG_CH)


def widths_of(state: dict[str, torch.Tensor], prefix: str = "") -> tuple[int, ...]:
    """The ``widths`` of an ``InteractionNet`` state dict (keys under ``prefix``), read from
    the first convolution of each encoder level."""
    keys = (FIRST_CONV, "encoder.l2.c1.0.weight", "encoder.l3.c1.0.weight")
    keys += ("encoder.l4.0.c1.0.weight",)
    return tuple(int(state[prefix + k].shape[0]) for k in keys)


class MemoryNet(nn.Module):
    """Key/value memory propagation of a mask from slice to slice.

    Shapes (B batch, N memory slices, h = w = CROP / 8):
      encode_key(img (B, IMG_CH, H, W)) -> key (B, K, h, w), skips [f1, f2, f3, f4]
      encode_value(img, mask (B, 1, H, W), f4) -> value (B, V, h, w)
      read_memory(qkey (B, K, h, w), mkeys (B, N, K, h, w), mvalues (B, N, V, h, w))
          -> readout (B, V, h, w)
      segment(readout, skips, prev (B, 1, H, W)) -> logits (B, 1, H, W); ``prev`` is the
          neighbouring slice's mask sampled in this slice's window.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (16, 32, 48, 96),
        key_dim: int = 64,
        value_dim: int = 64,
    ) -> None:
        super().__init__()
        self.key_encoder = _Encoder(IMG_CH, widths, light=True)
        self.key_proj = nn.Conv2d(widths[3], key_dim, 1)
        self.value_encoder = _Encoder(IMG_CH + 1, (8, 16, 32, value_dim), light=True)
        self.value_fuse = _Block(value_dim + widths[3], value_dim)
        self.decoder = _Decoder(value_dim + widths[3] + 1, widths)
        del self.decoder.u1, self.decoder.out  # decoded at 1/2 resolution, see segment()
        self.coarse_out = nn.Conv2d(widths[1], 1, 1)
        self.refine = nn.Sequential(_conv(widths[0] + 2, 8), nn.Conv2d(8, 1, 1))

    def encode_key(self, img: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f = self.key_encoder(img)
        return self.key_proj(f[3]), f

    def encode_value(
        self, img: torch.Tensor, mask: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        v = self.value_encoder(torch.cat([img, mask], 1))[3]
        return self.value_fuse(torch.cat([v, f4], 1))

    @staticmethod
    def read_memory(
        qkey: torch.Tensor, mkeys: torch.Tensor, mvalues: torch.Tensor
    ) -> torch.Tensor:
        b, k, h, w = qkey.shape
        n = mkeys.shape[1]
        q = qkey.flatten(2)  # B K P
        mk = mkeys.permute(0, 2, 1, 3, 4).reshape(b, k, n * h * w)  # B K NP
        mv = mvalues.permute(0, 2, 1, 3, 4).reshape(b, mvalues.shape[2], n * h * w)  # B V NP
        # Negative squared L2 distance (STCN); the |q|^2 term is constant per query and dropped.
        sim = (2 * mk.transpose(1, 2) @ q - mk.pow(2).sum(1).unsqueeze(2)) / k**0.5  # B NP P
        attn = torch.softmax(sim, dim=1)
        return (mv @ attn).view(b, -1, h, w)

    def segment(
        self, readout: torch.Tensor, skips: list[torch.Tensor], prev: torch.Tensor
    ) -> torch.Tensor:
        f1, f2, f3, f4 = skips
        prev_low = F.adaptive_avg_pool2d(prev, f4.shape[-2:])
        x = torch.cat([readout, f4, prev_low], 1)
        d = self.decoder.mid(x)
        d = self.decoder.u3(d, f3)
        d = self.decoder.u2(d, f2)
        # Decode at half resolution; one light full-resolution step sharpens the edges.
        coarse = F.interpolate(
            self.coarse_out(d), size=prev.shape[-2:], mode="bilinear", align_corners=False
        )
        return coarse + self.refine(torch.cat([f1, coarse, prev], 1))


class FusionScorer(nn.Module):
    """(image channels, previous mask, new mask) at ``SCORE_CROP`` -> logit "previous is better"."""

    IN_CH = IMG_CH + 3  # image, prev, new, |prev - new|

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(self.IN_CH, widths[0])]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers.append(_Block(a, b, 2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * widths[-1], 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, img: torch.Tensor, prev: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        x = self.features(torch.cat([img, prev, new, (prev - new).abs()], 1))
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        return self.head(pooled).squeeze(1)


class LimNet(nn.Module):
    """The three networks together (one state dict, one weights file).

    ``interaction_context``: neighbouring slices on each side that the interaction network
    sees (``InteractionNet``); a list of two or more makes an ``InteractionEnsemble`` of
    networks with those contexts (the shipped weights: ``[0, 1]``). ``interaction_widths``:
    the interaction network's ``widths`` (``WIDTHS`` when None), a list of them for an
    ensemble.
    """

    def __init__(
        self,
        interaction_context: int | list[int] = 0,
        interaction_widths: tuple[int, ...] | list[tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.interaction: InteractionNet | InteractionEnsemble
        single = isinstance(interaction_context, int)
        if interaction_widths is not None and single != isinstance(interaction_widths, tuple):
            raise ValueError("give one widths tuple for one network, a list for an ensemble")
        if single:
            widths = interaction_widths or WIDTHS
            self.interaction = InteractionNet(widths, context=interaction_context)
        else:
            self.interaction = InteractionEnsemble(interaction_context, interaction_widths)
        self.memory = MemoryNet()
        self.scorer = FusionScorer()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
