"""Fully-convolutional tile classifiers: a registry of named presets.

Every network uses only valid (unpadded) convolutions and 2×2 max pooling, so a
T×T tile maps to a single 1×1 output and a larger image maps to a grid of outputs,
one per tile position at stride S = 2**stages. The first ("stem") convolution's
kernel absorbs T modulo S, and the last ("head") convolution spans what is left of
the tile, so any even T at or above the preset's minimum is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .._errors import TilemapInputError

MAX_TILE_SIZE = 1024
"""The largest tile side in pixels: bounds the head kernel, so a model's size and memory."""

ACTIVATIONS = ("softmax", "sigmoid")
"""Output activations: ``softmax`` (scores of a tile sum to 1, trained with cross-entropy) or
``sigmoid`` (one independent score per class, trained one-vs-rest, so a tile unlike every
class can score low for all of them)."""


@dataclass(frozen=True)
class Preset:
    """Architecture of a named network preset.

    Parameters
    ----------
    widths : tuple of int
        Channels of each stage; one 2× pooling per stage, so the step is 2**len(widths).
    convs_per_stage : int
        3×3 valid convolutions in each stage before its pooling.
    head_width : int
        Channels of the head convolution that spans the remaining tile.
    description : str
        One line for menus and help texts.
    """

    widths: tuple[int, ...]
    convs_per_stage: int
    head_width: int
    description: str

    @property
    def step(self) -> int:
        """The network stride S in pixels."""
        return 2 ** len(self.widths)

    @property
    def min_tile_size(self) -> int:
        """The smallest allowed tile size (a 3×3 stem and a 1×1 head span)."""
        return _tile_size(self, stem=3, head=1)


PRESETS: dict[str, Preset] = {
    "small": Preset((8, 16), 2, 32, "step 4, fast; fine textures and small defects"),
    "medium": Preset((16, 32, 64), 2, 64, "step 8; the default"),
    "large": Preset((16, 32, 64, 96), 2, 128, "step 16; large structures, more context"),
}


def _tile_size(preset: Preset, stem: int, head: int) -> int:
    size = head
    for _ in preset.widths:
        size = 2 * size + 2 * preset.convs_per_stage
    return size + stem - 1


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a network: preset, its layer sizes and the data it sees.

    ``activation`` (one of :data:`ACTIVATIONS`) turns the network's logits into scores at
    inference; the network itself always ends in logits.
    """

    preset: str
    tile_size: int
    in_channels: int
    num_classes: int
    stem_kernel: int
    head_kernel: int
    widths: tuple[int, ...]
    convs_per_stage: int
    head_width: int
    activation: str = "softmax"

    @property
    def step(self) -> int:
        return 2 ** len(self.widths)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        d = dict(d)
        d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)


def architecture(
    preset: str, tile_size: int, in_channels: int, num_classes: int, activation: str = "softmax"
) -> Architecture:
    """Resolve a preset and a tile size into concrete layer sizes.

    Raises
    ------
    TilemapInputError
        For an unknown preset or activation, an odd tile size, or one below the preset's
        minimum or above :data:`MAX_TILE_SIZE`.

    Examples
    --------
    >>> arch = architecture("medium", 64, in_channels=1, num_classes=3)
    >>> arch.step, arch.stem_kernel, arch.head_kernel
    (8, 5, 4)
    """
    if preset not in PRESETS:
        raise TilemapInputError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if activation not in ACTIVATIONS:
        raise TilemapInputError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")
    p = PRESETS[preset]
    tile_size = int(tile_size)
    if tile_size % 2:
        nearest = min(max(p.min_tile_size, tile_size + 1), MAX_TILE_SIZE)
        raise TilemapInputError(
            f"tile_size must be even (T - S must be even with step S={p.step}), got {tile_size}; "
            f"try tile_size={nearest}"
        )
    if tile_size < p.min_tile_size:
        smaller = [name for name, q in PRESETS.items() if q.min_tile_size <= tile_size]
        other = f", or preset={smaller[-1]!r}" if smaller else ""
        raise TilemapInputError(
            f"tile_size {tile_size} is below the {preset!r} preset's minimum of {p.min_tile_size}; "
            f"use tile_size={p.min_tile_size} or larger{other}"
        )
    if tile_size > MAX_TILE_SIZE:
        raise TilemapInputError(
            f"tile_size {tile_size} is above the maximum of {MAX_TILE_SIZE}; "
            "use a smaller tile, or downsample the image"
        )
    base = _tile_size(p, stem=1, head=0)  # T = base + (stem - 1) + S * head
    rest = tile_size - base
    stem = 1 + (rest - p.step * 1) % p.step
    if stem < 3:
        stem += p.step
    head = (rest - (stem - 1)) // p.step
    if stem < 3 or head < 1:  # pragma: no cover - excluded by min_tile_size
        raise TilemapInputError(f"tile_size {tile_size} does not fit preset {preset!r}")
    return Architecture(
        preset, tile_size, int(in_channels), int(num_classes), stem, head,
        p.widths, p.convs_per_stage, p.head_width, activation,
    )


def _conv_block(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def build_network(arch: Architecture) -> nn.Sequential:
    """The ``torch.nn`` module for ``arch``: (N, C, T, T) -> (N, classes, 1, 1) logits."""
    layers: list[nn.Module] = _conv_block(arch.in_channels, arch.widths[0], arch.stem_kernel)
    cin = arch.widths[0]
    for width in arch.widths:
        for _ in range(arch.convs_per_stage):
            layers += _conv_block(cin, width, 3)
            cin = width
        layers.append(nn.MaxPool2d(2))
    layers += _conv_block(cin, arch.head_width, arch.head_kernel)
    layers.append(nn.Conv2d(arch.head_width, arch.num_classes, 1))
    return nn.Sequential(*layers)


def output_activation(arch: Architecture) -> nn.Module:
    """The module that turns ``arch``'s logits (N, classes, ...) into scores."""
    if arch.activation == "sigmoid":
        return nn.Sigmoid()
    if arch.activation == "softmax":
        return nn.Softmax(dim=1)
    raise TilemapInputError(f"unknown activation {arch.activation!r}; choose one of {list(ACTIVATIONS)}")


def fuse_for_inference(net: nn.Sequential) -> nn.Sequential:
    """A copy of ``net`` with each eval-mode BatchNorm folded into its convolution.

    The fused network computes the same function with fewer passes over memory.
    """
    fused: list[nn.Module] = []
    modules = list(net)
    i = 0
    while i < len(modules):
        m = modules[i]
        if isinstance(m, nn.Conv2d) and i + 1 < len(modules) and isinstance(modules[i + 1], nn.BatchNorm2d):
            fused.append(torch.nn.utils.fusion.fuse_conv_bn_eval(m.eval(), modules[i + 1].eval()))
            i += 2
        else:
            fused.append(m)
            i += 1
    return nn.Sequential(*fused).eval()


def flops_per_output(arch: Architecture, rows: int, cols: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of a dense pass producing ``rows × cols`` outputs."""
    h = (rows - 1) * arch.step + arch.tile_size
    w = (cols - 1) * arch.step + arch.tile_size
    total = 0
    net = build_network(arch)
    for m in net:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0]
            h, w = h - k + 1, w - k + 1
            total += 2 * h * w * m.in_channels * m.out_channels * k * k
        elif isinstance(m, nn.MaxPool2d):
            h, w = h // 2, w // 2
    return total
