"""An exponential moving average of a network's weights, the network that validation judges and
training keeps."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """A copy of ``net`` whose floating-point parameters and buffers (BatchNorm statistics) follow
    ``net``'s as an exponential moving average.

    After update t the average moves towards the network by 1 − d_t, with
    d_t = min(``decay``, (1 + t) / (10 + t)): early updates, from random weights, are soon forgotten.
    The average spans about the last (t + 10) / 9 steps until that reaches 1 / (1 − ``decay``), after
    about 9·decay / (1 − decay) updates (890 for 0.99); from then on the last 1 / (1 − ``decay``).
    Integer buffers (BatchNorm's batch count) are copied.

    Parameters
    ----------
    net : torch.nn.Module
        The network being trained; ``module`` is a deep copy on the same device.
    decay : float
        In [0, 1); 0 makes ``module`` a copy of ``net`` after every update.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(net)
        self.decay = float(decay)
        self.updates = 0
        pairs = list(zip([*net.parameters(), *net.buffers()], [*self.module.parameters(), *self.module.buffers()]))
        self._floats = [(s, a) for s, a in pairs if a.is_floating_point()]
        self._others = [(s, a) for s, a in pairs if not a.is_floating_point()]
        for _, a in pairs:
            a.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights of the network given at creation."""
        self.updates += 1
        weight = 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for source, average in self._floats:
            average.lerp_(source, weight)
        for source, average in self._others:
            average.copy_(source)
