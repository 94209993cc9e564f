"""A training's options, checked when they are made. Kept apart from ``train`` so that the
command line declares them without importing torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from psicbatch.errors import PsicbatchError

PIXEL_THRESHOLDS = ("f1", "iou")  # how the pixel threshold is chosen (``pixel_threshold``)
MODES = ("two-step", "end-to-end")
KEEPS = ("last", "best")  # which epoch's weights each phase ends with (``--keep``)
THRESHOLD_IMAGES = ("training", "validation")  # the images thresholds are chosen on


@dataclass(frozen=True)
class TrainOptions:
    mode: str = "two-step"
    width: float = 0.25
    input_size: tuple[int, int] = (512, 512)
    seg_epochs: int = 40  # also the epoch count of end-to-end mode
    cls_epochs: int = 30
    batch_size: int = 4
    seg_lr: float = 0.1
    cls_lr: float = 0.05
    dilate: int = 0  # grow defect labels by this many pixels (thin annotations)
    augment: bool = True  # random horizontal and vertical flips
    brightness: float = 0.0  # each training image's pixels times a gain in [1 - b, 1 + b]
    delta: float = 0.01  # end-to-end classification loss weight
    alpha_cap: float = 1.0  # eq. (2): the defect pixels' weight alpha at most this (1: none)
    dice_weight: float = 0.0  # weight of a soft Dice term added to eq. (2) (0: the paper's)
    pixel_threshold: str = "f1"  # f1: best pooled F1; iou: best mean IoU per defective image
    tile_overlap: int | None = None  # trained on input_size tiles at native resolution
    seed: int = 0
    init: str | None = None  # SHA-256 of the checkpoint whose weights training starts from
    keep: str = "last"  # best: each phase ends with its best epoch on the validation images
    thresholds_on: str = "training"  # the images both decision thresholds are chosen on
    precision: str = "auto"
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the options (kept in checkpoints, compared on resume)."""
        return {**asdict(self), "input_size": list(self.input_size)}

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PsicbatchError(
                f"unknown training mode {self.mode!r}; choose {' or '.join(MODES)}"
            )
        if not 0.5 <= self.alpha_cap <= 1.0:
            raise PsicbatchError(f"--alpha-cap must lie in [0.5, 1], got {self.alpha_cap}")
        if not 0.0 <= self.brightness < 1.0:
            raise PsicbatchError(f"--brightness must lie in [0, 1), got {self.brightness}")
        if not 0.0 <= self.dice_weight <= 10.0:
            raise PsicbatchError(f"--dice-weight must lie in [0, 10], got {self.dice_weight}")
        if self.pixel_threshold not in PIXEL_THRESHOLDS:
            raise PsicbatchError(f"--pixel-threshold must be one of {', '.join(PIXEL_THRESHOLDS)}")
        if self.keep not in KEEPS:
            raise PsicbatchError(f"--keep must be one of {', '.join(KEEPS)}, got {self.keep!r}")
        if self.thresholds_on not in THRESHOLD_IMAGES:
            raise PsicbatchError(
                f"--thresholds-on must be one of {', '.join(THRESHOLD_IMAGES)}, "
                f"got {self.thresholds_on!r}"
            )
        check_epochs(self.mode, self.seg_epochs, self.cls_epochs, self.init is not None)

    def check_validation(self, validated: bool) -> None:
        """What is chosen on held-out images needs them (``validated``: given)."""
        if validated:
            return
        if self.keep == "best":
            raise PsicbatchError(
                "--keep best needs --validation: each phase keeps the epoch that scores best "
                "on held-out images"
            )
        if self.thresholds_on == "validation":
            raise PsicbatchError(
                "--thresholds-on validation needs --validation: the images the thresholds "
                "are chosen on"
            )


def check_epochs(mode: str, seg_epochs: int, cls_epochs: int, from_trained: bool) -> None:
    """A part of the network trained for no epoch keeps its random weights: a model that
    would write noise as masks or probabilities is refused, unless its training starts
    from trained weights (``from_trained``: ``--init``), where a step given no epoch keeps
    the weights it starts from."""
    if from_trained:
        return
    start = "start from a trained checkpoint's weights with --init"
    if mode == "end-to-end" and seg_epochs == 0:
        raise PsicbatchError(
            f"--seg-epochs 0 trains nothing (end-to-end training's epochs are --seg-epochs): "
            f"the network would keep its random weights; give it epochs, or {start}"
        )
    if mode == "two-step" and seg_epochs == 0:
        raise PsicbatchError(
            "--seg-epochs 0 leaves the segmentation network's weights random (masks of "
            f"noise, and step 2 decides from its features); give step 1 epochs, or {start}"
        )
    if mode == "two-step" and cls_epochs == 0:
        raise PsicbatchError(
            "--cls-epochs 0 leaves the classification layers' weights random (every "
            f"image's defect probability would be noise); give step 2 epochs, or {start}"
        )


# Recorded options that train's command line spells otherwise, or sets with none.
OPTION_NAMES = {"tile_overlap": "--overlap"}
UNSET_BY_OPTIONS = {"delta"}  # end-to-end mode's classification weight: the paper's


def with_defaults(recorded: dict[str, Any], keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Training options as an earlier record holds them, those added since taking their
    defaults (of ``keys`` only, where given: a record that leaves some out on purpose)."""
    defaults = TrainOptions().to_dict()
    return {**{key: defaults[key] for key in (defaults if keys is None else keys)}, **recorded}


def changed_values(recorded: Any, current: Any, named: Callable[[str], str] = str) -> str:
    """Which values of a record differ, then and now (``: input_size 512x512 there, 816x320
    now``, each key as ``named`` says it): a default that changed between two runs is
    named, not only its group."""
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return ""
    changed = [
        f"{named(key)} {_value_text(recorded.get(key))} there, {_value_text(current.get(key))} now"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]
    return f": {', '.join(changed)}" if changed else ""


def option_name(key: str) -> str:
    """How ``train`` spells the option that sets a recorded one: ``seg_epochs`` is
    ``--seg-epochs``, ``tile_overlap`` ``--overlap``; one no option sets keeps its name."""
    if key in UNSET_BY_OPTIONS:
        return key
    return OPTION_NAMES.get(key, "--" + key.replace("_", "-"))


def _value_text(value: Any) -> str:
    """A recorded value as options write it: sizes as HxW."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    return "unset" if value is None else str(value)


def check_masks(defective: list[bool], mask_known: list[bool], mode: str) -> None:
    """Defective images without a mask teach the image decision (step 2) only: the masks
    need at least one defective image with its mask, and end-to-end training needs all."""
    unmasked = mask_known.count(False)
    if not unmasked:
        return
    if mode == "end-to-end":
        raise PsicbatchError(
            f"{unmasked} defective training images have no mask: end-to-end training learns "
            "masks and decisions from every image at once; train two-step (the default), "
            "whose masks are learned from the images with masks"
        )
    if not any(bad and known for bad, known in zip(defective, mask_known, strict=True)):
        raise PsicbatchError(
            "no defective training image has a mask: the masks are learned from the "
            "defects' pixels (add masks/NAME.png marking them for some of the images)"
        )
