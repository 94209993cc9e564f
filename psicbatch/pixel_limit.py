"""The largest image psicbatch decodes: one limit for every reader and every process.

Decoding allocates the whole image at once, so each file's size is checked from its
header first (``data.images.check_pixels``). 100 megapixels is far above any area camera
and far below a decompression bomb; line-scan images beyond it can be allowed with
``PSICBATCH_MAX_MEGAPIXELS``. It is an environment variable rather than an option so
that every reader (training, evaluation, runs, reports, regions of interest) and every
worker process a run starts applies the same limit without being handed it.
"""

from __future__ import annotations

from psicbatch.environment import positive_number

VARIABLE = "PSICBATCH_MAX_MEGAPIXELS"
DEFAULT_MEGAPIXELS = 100


def max_pixels() -> int:
    """The limit in pixels, from the environment; a value that is not a positive number
    is a one-line error."""
    return max(1, int(positive_number(VARIABLE, DEFAULT_MEGAPIXELS, "megapixels") * 1_000_000))
