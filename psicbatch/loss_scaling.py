"""Dynamic loss scaling for fp16 training, as ``torch.amp.GradScaler`` does it, for this
trainer's plain SGD.

fp16 holds values down to about 6e-8: the gradients of a loss over a few defect pixels
fall below that and become zero, so fp16 training (GPUs without bf16: T4, V100) learns
nothing or less. The loss is multiplied by a power of two before backward and the
gradients divided by it after (exact in fp32). A step whose gradients are not finite is
skipped and the scale halved; after ``GROWTH_INTERVAL`` finite steps it doubles. bf16
and fp32 keep fp32's range and need none: their scale stays 1, and nothing is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

INITIAL_SCALE = 2.0**16
GROWTH_INTERVAL = 2000


@dataclass
class LossScale:
    scale: float = 1.0
    dynamic: bool = False
    good_steps: int = 0  # finite steps since the scale last changed
    skipped_steps: int = 0  # steps dropped for gradients that overflowed

    @classmethod
    def for_precision(cls, precision: str) -> LossScale:
        return cls(INITIAL_SCALE, dynamic=True) if precision == "fp16" else cls()

    def gradients(
        self, loss: torch.Tensor, parameters: Sequence[torch.nn.Parameter]
    ) -> list[torch.Tensor | None] | None:
        """The loss's gradients, unscaled; None when they overflowed: skip the step."""
        grads = torch.autograd.grad(loss * self.scale, parameters, allow_unused=True)
        if not self.dynamic:
            return list(grads)
        present = [grad for grad in grads if grad is not None]
        if not bool(torch.stack([grad.abs().amax() for grad in present]).isfinite().all()):
            self.scale /= 2
            self.good_steps = 0
            self.skipped_steps += 1
            return None
        unscaled: list[torch.Tensor | None] = [
            None if grad is None else grad / self.scale for grad in grads
        ]
        self.good_steps += 1
        if self.good_steps == GROWTH_INTERVAL:
            self.scale *= 2
            self.good_steps = 0
        return unscaled

    def record(self) -> dict[str, Any]:
        """What a partial checkpoint keeps, so a resumed training scales as before."""
        return asdict(self)
