"""Image preprocessing shared by training, evaluation and inference.

One definition of "resize, scale to [0, 1], normalise" keeps every path (training, the
PIL decoder, the DALI pipeline) producing the same tensors for the same file.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from psicbatch.checkpoint import Preprocessing


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of uint8 H x W x C to ``size`` (H, W)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if image.shape[2] == 1:
        resized = Image.fromarray(image[:, :, 0]).resize((width, height), Image.BILINEAR)
        return np.asarray(resized)[:, :, None]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink or grow a binary mask; a pixel is defect if any defect falls inside it, so
    thin scratches survive down-scaling."""
    height, width = size
    if mask.shape == (height, width):
        return mask
    coverage = Image.fromarray(mask.astype(np.float32)).resize((width, height), Image.BOX)
    return np.asarray(coverage) > 0


def normalize(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 network input."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def resize_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring N x 1 x h x w probability maps back to an original image size (bilinear)."""
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    return torch.nn.functional.interpolate(
        probabilities.float(), size=size, mode="bilinear", align_corners=False
    )


def full_resolution_mask(
    segmentation: np.ndarray, size: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel probabilities at the engine size -> (probabilities at ``size``, mask there)."""
    full = resize_probabilities(torch.from_numpy(segmentation)[None, None], size)[0, 0].numpy()
    return full, full >= threshold
