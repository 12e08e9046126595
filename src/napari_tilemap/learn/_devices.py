"""Choosing the torch device: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from .._errors import TilemapInputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a usable device.

    Raises
    ------
    TilemapInputError
        When the requested device does not exist on this machine.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise TilemapInputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TilemapInputError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise TilemapInputError("device 'mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    return dev


def release_memory(device: torch.device) -> None:
    """Give cached accelerator memory back to the system after training or prediction."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
