"""The options of the commands that train and score on labelled datasets (train, eval,
cv), apart from the shared option types so that other commands do not import training."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from psicbatch.commands import command_line
from psicbatch.commands.options import (
    AT_LEAST_ONE,
    NON_NEGATIVE_INT,
    POSITIVE,
    TRAINING_SIZE,
    Bounded,
    CheckpointFile,
    Location,
    device_option,
    precision_option,
    split_option,
)
from psicbatch.data.combined import WHOLE, datasets_text, division_note, read_datasets
from psicbatch.data.image_check import refuse_unusable
from psicbatch.data.images import BIT_DEPTHS, file_bit_depth
from psicbatch.data.layouts import (
    AUTO,
    LAYOUTS,
    SampleRef,
    require_masks,
)
from psicbatch.errors import PsicbatchError
from psicbatch.fine_tuning import StartingPoint, check_same_reading, starting_point
from psicbatch.fingerprints import ImageSet, file_digests
from psicbatch.network_size import auto_input_size
from psicbatch.paths import readable_path
from psicbatch.train_options import (
    MODES,
    PIXEL_THRESHOLDS,
    TrainOptions,
    check_epochs,
    check_masks,
    option_name,
)


def layout_option(what: str = "DATA") -> Callable:
    """The one definition of ``--layout``: how a labelled dataset is organised."""
    return click.option(
        "--layout",
        type=click.Choice([AUTO, *LAYOUTS]),
        default=AUTO,
        show_default=True,
        help=f"How {what} is organised (see the README); auto: the one layout its folders match.",
    )


def dataset_options(command: Callable) -> Callable:
    """DATA folder, its layout and part, colour and bit depth."""
    command = click.option(
        "--bit-depth",
        type=click.Choice(["auto", *map(str, BIT_DEPTHS)]),
        default="auto",
        show_default=True,
        help="Pixel depth the model reads: 8, or 12/16-bit grayscale at full range (12: "
        "12-bit values stored in 16-bit files). auto: 16 when the first image is a 16-bit "
        "file, else 8.",
    )(command)
    command = click.option(
        "--channels",
        type=click.Choice(["auto", "1", "3"]),
        default="auto",
        show_default=True,
        help="Grayscale (1) or colour (3); auto: colour for kolektorsdd2 only.",
    )(command)
    command = split_option(layout_option()(command))
    return click.argument("data", nargs=-1, required=True, type=Location(path_type=Path))(command)


def channel_count(choice: str, layouts: list[str]) -> int:
    """``--channels``: as chosen, or (auto) colour for KolektorSDD2's images only."""
    if choice != "auto":
        return int(choice)
    colour = {layout == "kolektorsdd2" for layout in layouts}
    if len(colour) > 1:
        raise PsicbatchError(
            "the folders mix KolektorSDD2's colour images with grayscale layouts; choose "
            "--channels 1 or 3"
        )
    return 3 if colour == {True} else 1


def training_options(command: Callable) -> Callable:
    defaults = TrainOptions()
    options = [
        click.option(
            "--mode",
            type=click.Choice(MODES),
            default=defaults.mode,
            show_default=True,
            help="two-step: the paper's; end-to-end: eq. (1), for comparison.",
        ),
        click.option(
            "--width",
            type=Bounded(float, 0, 4, low_open=True),
            default=defaults.width,
            show_default=True,
            help="Channel width multiplier (1 = the paper's network).",
        ),
        click.option(
            "--input-size",
            type=TRAINING_SIZE,
            default="auto",
            show_default=True,
            help="Images are resized to this size (HxW) for the network. auto: the "
            "training images' median size, scaled down to at most 512x512's pixels with "
            "its aspect ratio kept (1260x500 KolektorSDD images: 816x320).",
        ),
        click.option(
            "--seg-epochs",
            type=NON_NEGATIVE_INT,
            default=defaults.seg_epochs,
            show_default=True,
            help="Epochs of step 1 (or of end-to-end training).",
        ),
        click.option(
            "--cls-epochs",
            type=NON_NEGATIVE_INT,
            default=defaults.cls_epochs,
            show_default=True,
            help="Epochs of step 2 (classification).",
        ),
        click.option(
            "--batch-size", type=AT_LEAST_ONE, default=defaults.batch_size, show_default=True
        ),
        click.option(
            "--seg-lr",
            type=POSITIVE,
            default=defaults.seg_lr,
            show_default=True,
            help="Initial SGD learning rate of step 1 / end-to-end.",
        ),
        click.option(
            "--cls-lr",
            type=POSITIVE,
            default=defaults.cls_lr,
            show_default=True,
            help="Initial SGD learning rate of step 2.",
        ),
        click.option(
            "--dilate",
            type=NON_NEGATIVE_INT,
            default=defaults.dilate,
            show_default=True,
            help="Grow defect labels by this many pixels (thin annotations).",
        ),
        click.option(
            "--augment/--no-augment",
            default=defaults.augment,
            show_default=True,
            help="Random horizontal and vertical flips.",
        ),
        click.option(
            "--brightness",
            type=Bounded(float, 0, 0.95),
            default=defaults.brightness,
            show_default=True,
            help="Train on each image under a random light: its pixels times a gain drawn "
            "from [1-B, 1+B] (0: as they are, the paper's). For lines whose light or "
            "exposure drifts.",
        ),
        click.option(
            "--alpha-cap",
            type=Bounded(float, 0.5, 1),
            default=defaults.alpha_cap,
            show_default=True,
            help="Eq. (2): weight of defect pixels at most this (1: the paper's, no cap).",
        ),
        click.option(
            "--dice-weight",
            type=Bounded(float, 0, 10),
            default=defaults.dice_weight,
            show_default=True,
            help="Add this times a per-image soft Dice loss to eq. (2) (0: the paper's loss).",
        ),
        click.option(
            "--pixel-threshold",
            type=click.Choice(PIXEL_THRESHOLDS),
            default=defaults.pixel_threshold,
            show_default=True,
            help="Choose the pixel threshold for best F1 or best IoU (on the training "
            "images, or on those --thresholds-on names).",
        ),
        click.option("--seed", default=defaults.seed, show_default=True),
        click.option(
            "--init",
            type=CheckpointFile(),
            help="Start from this trained checkpoint's weights (fine-tuning) instead of "
            "random ones. Its width, colour, pixel depth and normalisation are kept, and "
            "with --input-size auto its input size (and tiling).",
        ),
        precision_option("training"),
        device_option(),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class TrainingSetup:
    options: TrainOptions
    samples: list[SampleRef]
    channels: int
    dataset: dict[str, Any]  # its description, recorded in checkpoints and reports
    digests: list[bytes | None]  # each sample's image file (fingerprints.file_digest)
    start: StartingPoint | None = None  # the checkpoint --init starts from
    division: str | None = None  # the part of a published train/test division read


def training_setup(
    data: tuple[Path, ...], layout: str, split: str, channels: str, kwargs: dict[str, Any]
) -> TrainingSetup:
    """What train and cv both start from: the training options (popped from the
    command's keyword arguments), the samples, their channel count, the dataset's
    description, and each image file's digest (the images a model learns from are
    recorded, and copies of one another are noted)."""
    init = kwargs.pop("init")
    _check_epochs(kwargs, from_trained=init is not None)  # before any image is read
    start = starting_point(init) if init is not None else None
    size_choice = None
    if start is not None:
        channels, size_choice = _as_the_start_reads(start, channels, kwargs)
    samples, layouts = read_datasets(data, layout, split)
    channels_read = channel_count(channels, layouts)
    folders = shlex.join(map(str, data))
    refuse_unusable(samples, folders)  # in seconds, before minutes of loading
    bit_depth = _bit_depth(kwargs.pop("bit_depth"), samples, channels_read)
    if bit_depth > 8:
        refuse_unusable(samples, folders, bit_depth)  # 8-bit images among deeper ones
    if len(samples) < 2:
        raise PsicbatchError(
            f"{datasets_text(data)}: {len(samples)} labelled image found; training needs "
            "at least 2 (thresholds and batches need more than one)"
        )
    _refuse_without_defects(  # found before the images load
        datasets_text(data),
        samples,
        "training needs at least one (a mask marking defect pixels, or for a review's "
        "sorting an image in defective/)",
    )
    if kwargs["input_size"] == "auto":
        kwargs["input_size"], size_choice = auto_input_size(samples, bit_depth)
    options = train_options_from(kwargs)
    if options.tile_overlap is not None:
        require_masks(samples, "tiled training labels each tile by its part of the mask")
    check_masks([s.is_defective for s in samples], [s.mask_known for s in samples], options.mode)
    unmasked = sum(not s.mask_known for s in samples)
    dataset = {
        "path": datasets_text(data),
        **({"folders": [str(folder) for folder in data]} if len(data) > 1 else {}),
        "layout": datasets_text(layouts),
        **({"split": split} if split != WHOLE else {}),
        "images": len(samples),
        "channels": str(channels_read),
        "bit_depth": bit_depth,
        **({"defective_without_masks": unmasked} if unmasked else {}),
        "command": command_line(),
        **({"input_size": size_choice} if size_choice else {}),
    }
    digests = file_digests(sample.image_path for sample in samples)
    division = division_note(data, samples, split)
    return TrainingSetup(options, samples, channels_read, dataset, digests, start, division)


def _as_the_start_reads(
    start: StartingPoint, channels: str, kwargs: dict[str, Any]
) -> tuple[str, str | None]:
    """Fine-tuning reads images as the starting checkpoint's weights were learnt to: its
    channels, pixel depth and width where left out (others refused), and, with
    ``--input-size auto``, its input size and tiling. Returns ``--channels`` and how the
    input size was chosen (None: given)."""
    preprocessing = start.checkpoint.preprocessing
    if channels != "auto":
        check_same_reading(start, "--channels", int(channels), start.channels)
    if kwargs["bit_depth"] != "auto":
        check_same_reading(start, "--bit-depth", int(kwargs["bit_depth"]), start.bit_depth)
    if _given("width"):
        check_same_reading(start, "--width", kwargs["width"], start.width)
    kwargs.update(width=start.width, bit_depth=str(start.bit_depth), init=start.digest)
    if kwargs["input_size"] != "auto":
        return str(start.channels), None
    height, size_width = kwargs["input_size"] = preprocessing.input_size
    if preprocessing.tile_overlap is not None:
        kwargs["tile_overlap"] = preprocessing.tile_overlap
        how = f"tiles of {height}x{size_width}, overlap {preprocessing.tile_overlap}"
    else:
        how = f"{height}x{size_width}"
    return str(start.channels), f"{how} (auto: the starting checkpoint's)"


def _check_epochs(kwargs: dict[str, Any], from_trained: bool) -> None:
    """Epochs that would leave weights random are refused, and step 2's options in
    end-to-end mode, which has no step 2 and would pass them over."""
    check_epochs(kwargs["mode"], kwargs["seg_epochs"], kwargs["cls_epochs"], from_trained)
    if kwargs["mode"] == "end-to-end":
        unused = [option_name(name) for name in ("cls_epochs", "cls_lr") if _given(name)]
        if unused:
            raise PsicbatchError(
                f"{' and '.join(unused)} set step 2 of two-step training; end-to-end "
                "training has one phase: --seg-epochs epochs from --seg-lr"
            )


def _given(parameter: str) -> bool:
    """Whether the command line (or the environment) set ``parameter``, rather than its
    default."""
    context = click.get_current_context(silent=True)
    source = context.get_parameter_source(parameter) if context is not None else None
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _bit_depth(choice: str, samples: list[SampleRef], channels: int) -> int:
    """The model's pixel depth: as chosen, or (auto) the first image's."""
    if choice == "auto":
        return file_bit_depth(samples[0].image_path) if channels == 1 else 8
    if int(choice) > 8 and channels != 1:
        raise PsicbatchError(f"--bit-depth {choice} is for grayscale images (--channels 1)")
    return int(choice)


def train_options_from(kwargs: dict[str, Any]) -> TrainOptions:
    """Pop the training options out of a command's keyword arguments."""
    names = TrainOptions.__dataclass_fields__
    return TrainOptions(**{name: kwargs.pop(name) for name in list(kwargs) if name in names})


@dataclass(frozen=True)
class ValidationSet:
    """Labelled images held out of training, scored after every epoch."""

    samples: list[SampleRef]
    record: dict[str, Any]  # in the checkpoint: what was held out (a resume checks it)
    shared: int  # of them, byte-identical copies of training images
    seen_before: int  # of them, among the images the starting checkpoint learnt from
    chose_start: int = 0  # of them, among those that chose the starting checkpoint's epochs

    def note(self) -> str | None:
        """Validation images a model learnt from, or that chose its starting weights,
        which are therefore not held out."""
        parts = [
            f"{self.shared} are byte-identical to training images" if self.shared else "",
            f"{self.seen_before} are among those the starting checkpoint was trained on"
            if self.seen_before
            else "",
            f"{self.chose_start} are among those that chose the starting checkpoint's epochs"
            if self.chose_start
            else "",
        ]
        said = ", ".join(part for part in parts if part)
        if not said:
            return None
        return (
            f"of the {len(self.samples)} validation images, {said}: their scores are not of "
            "images held out"
        )


def validation_set(folder: Path, layout: str, setup: TrainingSetup) -> ValidationSet:
    """``--validation``: read as the training data is (its ``--layout``; auto: the one the
    folder matches), refused where it could not score the image decision."""
    samples, layouts = read_datasets((folder,), layout)
    refuse_unusable(samples, shlex.quote(str(folder)), setup.dataset["bit_depth"])
    _refuse_without_defects(
        readable_path(folder),
        samples,
        "--validation needs defective images to score the masks and the image decision on",
    )
    if setup.options.tile_overlap is not None:
        require_masks(samples, "tiled validation labels each tile by its part of the mask")
    if setup.options.thresholds_on == "validation" and not any(
        sample.is_defective and sample.mask_known for sample in samples
    ):
        raise PsicbatchError(
            f"{readable_path(folder)}: no defective image has a mask; --thresholds-on "
            "validation chooses the pixel threshold on defect pixels (add masks, or choose "
            "the thresholds on the training images)"
        )
    digests = file_digests(sample.image_path for sample in samples)
    record = {
        "path": str(folder),
        "layout": layouts[0],
        "images": len(samples),
        "defective": sum(sample.is_defective for sample in samples),
        "image_digests": ImageSet.of_digests(digests).encode(),
    }
    shared = ImageSet.of_digests(setup.digests).count_among(digests)
    seen_before, chose_start = setup.start.known_among(digests) if setup.start else (0, 0)
    return ValidationSet(samples, record, shared, seen_before, chose_start)


def _refuse_without_defects(named: str, samples: list[SampleRef], needs: str) -> None:
    """One line where no labelled image of ``named`` is defective: nothing to learn, or to
    score, a defect on."""
    if not any(sample.is_defective for sample in samples):
        raise PsicbatchError(
            f"{named}: none of its {len(samples)} labelled images is defective; {needs}"
        )
