"""Device names as commands take them."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """``auto``: the first GPU when one is visible, else the CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
