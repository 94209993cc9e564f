"""Peak memory of the normalisation statistics alone (``TensorDataset.channel_stats``)
on N random 512x512 grayscale images held as uint8, as training holds them.

    /usr/bin/time -f "%e s %M KiB" python benchmarks/channel_stats_memory.py 600

Run it with PYTHONPATH at a checkout to measure that checkout's code.
"""

from __future__ import annotations

import sys

import torch

from psicbatch.data.masks import DefectMasks
from psicbatch.data.memory import TensorDataset

count = int(sys.argv[1]) if len(sys.argv) > 1 else 600
images = torch.randint(0, 256, (count, 1, 512, 512), dtype=torch.uint8)
labels = torch.zeros(count, dtype=torch.bool)
data = TensorDataset(images, DefectMasks(count, (512, 512)), labels, [(512, 512)] * count)
print(data.channel_stats())
