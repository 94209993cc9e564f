"""PSIC-Net (Lei et al., Machines 2021, section 3.1) as one PyTorch module.

One network, two outputs: per-pixel segmentation logits at the input's resolution and one
image-level defect logit. Channel counts below are for ``width=1`` (the paper's network); a
width multiplier scales the feature extractor and the inverse convolution network for small
variants (tests, CPU demos). The classification head keeps its 8/16/32 channels at any width.

Feature extraction network (every conv: conv -> BatchNorm -> ReLU, "same" padding, no dropout)::

    layer   kernel  channels  resolution
    conv1   5x5     32        1
    conv2   5x5     32        1      -> max-pool 2x2  (skip_half: 32 ch at 1/2)
    conv3   5x5     64        1/2
    conv4   5x5     64        1/2
    conv5   5x5     64        1/2    -> max-pool 2x2  (skip_quarter: 64 ch at 1/4)
    conv6   5x5     128       1/4
    conv7   5x5     128       1/4
    conv8   5x5     128       1/4
    conv9   5x5     128       1/4    -> max-pool 2x2
    conv10  15x15   1024      1/8

Inverse convolution network (every deconv: transposed conv -> BatchNorm -> ReLU)::

    heatmap   1x1 conv        64   1/8
    deconv1   5x5, stride 2   64   1/4
    deconv2   5x5             64   1/4
    deconv3   5x5             64   1/4   + skip_quarter
    deconv4   5x5, stride 2   32   1/2
    deconv5   5x5             32   1/2   + skip_half
    deconv6   5x5, stride 2   32   1
    logits    1x1 conv        1    1     (no BN/ReLU: segmentation logits)

Classification network, on concat(conv10 features, segmentation logits max-pooled to 1/8)::

    max-pool 2x2 -> conv 5x5, 8 ch  -> max-pool 2x2 -> conv 5x5, 16 ch
    -> max-pool 2x2 -> conv 5x5, 32 ch  (conv -> BatchNorm -> ReLU)
    global max + global average of that (2 x 32) and of the segmentation logits (2 x 1)
    -> fully connected 66 -> 1 (defect logit)

The paper's network (``width=1``, one input channel) has 31,907,836 parameters, about
970 GFLOP for a 1408x512 image and 353 GFLOP at 512x512 (see :func:`count_flops`).

Choices the paper leaves open, made here: BN+ReLU after the heatmap conv and every deconv;
the segmentation output enters the classifier as logits (max-pooled 8x8, which keeps small
defects visible); classifier pools use ``ceil_mode`` so tiny inputs never shrink to zero;
inputs are padded (edge-replicated) to a multiple of 8 and outputs cropped back, so any
height and width work; weights use He-normal initialisation (the paper's "standard normal"
would make a 30 M-parameter ReLU net diverge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from psicbatch.network_size import STRIDE

FEATURE_CHANNELS = (32, 32, 64, 64, 64, 128, 128, 128, 128, 1024)
FEATURE_KERNELS = (5,) * 9 + (15,)
POOL_AFTER = (2, 5, 9)  # 1-based layer numbers followed by a 2x2 max-pool
DECODER_CHANNELS = (64, 32)
CLASSIFIER_CHANNELS = (8, 16, 32)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network's structure (stored in checkpoints)."""

    width: float = 1.0
    in_channels: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")

    def scaled(self, channels: int) -> int:
        return max(1, round(channels * self.width))

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_block(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _deconv_block(in_ch: int, out_ch: int, upsample: bool) -> nn.Sequential:
    # Stride 2 with padding 2 and output_padding 1 doubles the size exactly; stride 1 keeps it.
    stride, output_padding = (2, 1) if upsample else (1, 0)
    return nn.Sequential(
        nn.ConvTranspose2d(
            in_ch, out_ch, 5, stride=stride, padding=2, output_padding=output_padding, bias=False
        ),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class FeatureExtractor(nn.Module):
    """Ten conv blocks with three max-pools; returns the two skip maps and the deep features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = [config.scaled(c) for c in FEATURE_CHANNELS]
        in_channels = [config.in_channels, *channels[:-1]]
        self.layers = nn.ModuleList(
            _conv_block(i, o, k)
            for i, o, k in zip(in_channels, channels, FEATURE_KERNELS, strict=True)
        )
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = []
        for number, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if number in POOL_AFTER:
                x = F.max_pool2d(x, 2)
                pooled.append(x)
        skip_half, skip_quarter, _ = pooled
        return skip_half, skip_quarter, x


class InverseConvolution(nn.Module):
    """FCN-style decoder: heatmap, three up-sampling stages, two skip additions."""

    def __init__(self, config: ModelConfig, in_channels: int) -> None:
        super().__init__()
        wide, narrow = (config.scaled(c) for c in DECODER_CHANNELS)
        self.heatmap = _conv_block(in_channels, wide, 1)
        self.up_to_quarter = nn.Sequential(
            _deconv_block(wide, wide, upsample=True),
            _deconv_block(wide, wide, upsample=False),
            _deconv_block(wide, wide, upsample=False),
        )
        self.up_to_half = nn.Sequential(
            _deconv_block(wide, narrow, upsample=True),
            _deconv_block(narrow, narrow, upsample=False),
        )
        self.up_to_full = _deconv_block(narrow, narrow, upsample=True)
        self.logits = nn.Conv2d(narrow, 1, 1)

    def forward(
        self, deep: torch.Tensor, skip_quarter: torch.Tensor, skip_half: torch.Tensor
    ) -> torch.Tensor:
        x = self.up_to_quarter(self.heatmap(deep)) + skip_quarter
        x = self.up_to_half(x) + skip_half
        return self.logits(self.up_to_full(x))


class Classifier(nn.Module):
    """Decision head on deep features and segmentation logits (both at 1/8 resolution)."""

    def __init__(self, feature_channels: int) -> None:
        super().__init__()
        in_channels = [feature_channels + 1, *CLASSIFIER_CHANNELS[:-1]]
        self.stages = nn.ModuleList(
            _conv_block(i, o, 5) for i, o in zip(in_channels, CLASSIFIER_CHANNELS, strict=True)
        )
        self.fc = nn.Linear(2 * CLASSIFIER_CHANNELS[-1] + 2, 1)

    def forward(self, deep: torch.Tensor, seg_logits: torch.Tensor) -> torch.Tensor:
        return self.head(*self.inputs(deep, seg_logits))

    @staticmethod
    def inputs(deep: torch.Tensor, seg_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the trained layers see, computed without parameters: the first stage's
        pooled input (1/16 resolution) and the segmentation logits' max and mean. Two-step
        training keeps these for every image instead of the deep features and full-size
        logits, a quarter of the memory and less."""
        x = torch.cat([deep, F.max_pool2d(seg_logits, STRIDE)], dim=1)
        seg_stats = torch.cat([seg_logits.amax(dim=(2, 3)), seg_logits.mean(dim=(2, 3))], dim=1)
        return F.max_pool2d(x, 2, ceil_mode=True), seg_stats

    def head(self, pooled: torch.Tensor, seg_stats: torch.Tensor) -> torch.Tensor:
        """The trained layers, from ``inputs``."""
        x = pooled
        for number, stage in enumerate(self.stages):
            x = stage(x if number == 0 else F.max_pool2d(x, 2, ceil_mode=True))
        return self.fc(torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3)), seg_stats], dim=1))


class PSICNet(nn.Module):
    """Pixel-wise segmentation and image-wise classification network.

    ``forward(x)`` takes N x C x H x W (any H, W) and returns ``(seg_logits, cls_logits)``
    shaped N x 1 x H x W and N x 1. Apply ``sigmoid`` for probabilities.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.features = FeatureExtractor(self.config)
        self.decoder = InverseConvolution(self.config, self.features.out_channels)
        self.classifier = Classifier(self.features.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if module.weight.is_meta:  # shapes only: initialising them would cost the
                    continue  # import of torch's compiler stack (seconds) and do nothing
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def segmentation_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in step one (feature extraction + inverse convolution)."""
        return [*self.features.parameters(), *self.decoder.parameters()]

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep features and segmentation logits, both for ``x`` padded to a multiple of 8.

        Split out so two-step training can compute them once for the frozen network.
        """
        skip_half, skip_quarter, deep = self.features(pad_to_multiple(x, STRIDE))
        return deep, self.decoder(deep, skip_quarter, skip_half)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        deep, seg_logits = self.segment(x)
        cls_logits = self.classifier(deep, seg_logits)
        return seg_logits[..., :height, :width], cls_logits


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right edges by replication up to a multiple of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(config: ModelConfig, height: int, width: int) -> int:
    """Floating-point operations for one image (2 x multiply-accumulates of every layer).

    Runs the network on PyTorch's ``meta`` device: shapes are propagated, nothing is
    computed, so even the full network at 1408x512 is counted in milliseconds.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = PSICNet(config).eval()
        image = torch.empty(1, config.in_channels, height, width)
    with FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops()
