"""The input sizes PSIC-Net takes. Kept apart from ``model`` so that command options can
check sizes without importing torch."""

#: The network's total down-sampling; inputs are padded to a multiple of it.
STRIDE = 8
#: The smallest input side trained or built (the classifier pools 3 more times).
MIN_NETWORK_SIZE = 32
#: ``--input-size auto`` keeps the fixed 512x512 default's pixels (so its cost per image)
#: while following the images' shape.
AUTO_PIXELS = 512 * 512


def fitted_size(height: int, width: int, pixels: int = AUTO_PIXELS) -> tuple[int, int]:
    """An image's size as the network takes it: scaled down (never up) to at most about
    ``pixels``, the aspect ratio kept, each side a multiple of STRIDE and at least
    MIN_NETWORK_SIZE. A fixed 512x512 squashes a 1260x500 KolektorSDD image (which did
    as well there: benchmarks/results/kolektorsdd-input-size/) and stretches a 630x230
    KolektorSDD2 one, computing 1.8x the pixels it has."""
    scale = min(1.0, (pixels / (height * width)) ** 0.5)

    def side(length: int) -> int:
        return max(MIN_NETWORK_SIZE, round(length * scale / STRIDE) * STRIDE)

    return side(height), side(width)
