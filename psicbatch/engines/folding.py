"""BatchNorm folded into the convolution before it, for inference.

In eval mode a BatchNorm is a per-channel scale and shift: folding it into the preceding
convolution's weights and bias removes one full pass over every activation map (the
network has 19 of them) without changing what is computed beyond float rounding.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

M = TypeVar("M", bound=nn.Module)


def fold_batchnorm(model: M) -> M:
    """Fold every conv -> BatchNorm pair of ``model`` (in eval mode) in place; returns it.

    PSIC-Net's blocks are ``Sequential(conv, BatchNorm2d, ReLU)``; the BatchNorm becomes
    an ``Identity`` so the module structure (and its parameter names) stay readable.
    """
    for block in model.modules():
        if not isinstance(block, nn.Sequential) or len(block) < 2:
            continue
        conv, norm = block[0], block[1]
        if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
            if norm.training:
                raise ValueError("fold_batchnorm needs a model in eval mode")
            block[0] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
            block[1] = nn.Identity()
    return model
