"""Files shipped inside the package: the demo model trained by scripts/train_demo_model.sh."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_model_path() -> Path:
    """The bundled demo checkpoint (width 0.125, 128x128 input, trained on synthetic data)."""
    return Path(str(resources.files(__name__) / "demo_model.pt"))
