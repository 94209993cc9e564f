"""Dataset readers: each published layout becomes one list of ``SampleRef``.

Layouts (``DATA`` is the folder given on the command line):

- ``kolektorsdd``: ``kosNN/PartK.jpg`` with ``kosNN/PartK_label.bmp`` (or ``.png``); a
  defect where the mask is above zero. Folds group whole ``kosNN`` folders.
- ``kolektorsdd2``: ``train|test/ID.png`` (colour) with ``ID_GT.png``.
- ``dagm``: ``ClassN/Train|Test/NNNN.PNG``; defective images are listed in
  ``.../Label/Labels.txt`` with masks ``.../Label/NNNN_label.PNG``. Each class has a
  texture and a defect of its own: a defective image's class is its defect type, so folds
  hold every class's defects, and reports count escapes by class.
- ``folder`` (your own data): ``images/NAME.ext`` with optional ``masks/NAME.ext`` (same
  name, any image extension); an image without a mask is defect-free.
- ``classes`` (images sorted by a review): ``good/`` (or ``ok/``) and ``defective/`` (or
  ``ng/``), each with any subfolders (those of ``defective/`` name defect types), with
  optional masks for defective ones (``masks/NAME.ext``, or at the image's own path:
  ``masks/scratch/NAME.ext``). A line's reviewers sort parts; few draw masks. Decisions
  and audits need only the sorting; a defective image without a mask has no
  segmentation score, and two-step training learns the image decision from it, not
  the masks.

A folder of such a dataset (``kolektorsdd/kos05``, ``dagm/Class3`` or ``dagm/Class3/Test``,
``kolektorsdd2/test``, a review's ``defective/``, the folder layout's ``images/``) is read
as that part of its dataset: its images only, its masks found where the dataset keeps
them, its ids and groups those of the whole dataset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from psicbatch.data.images import IMAGE_SUFFIXES, read_mask
from psicbatch.errors import PsicbatchError
from psicbatch.folder_walk import entries_of, files_below
from psicbatch.paths import regular_file_bytes

# How the published layouts name and place ground-truth masks.
LABEL_SUFFIX = "_label"  # KolektorSDD and DAGM: NAME_label.ext
GT_SUFFIX = "_GT"  # KolektorSDD2: NAME_GT.png
LABEL_FOLDER = "Label"  # DAGM: ClassN/Train/Label/
MASK_FOLDER = "masks"  # the folder layout: masks/NAME.ext


@dataclass(frozen=True)
class SampleRef:
    """One image of a dataset, before decoding: enough to load, label and split it."""

    id: str
    image_path: Path
    mask_path: Path | None
    is_defective: bool
    group: str
    subset: str = ""  # its part of the layout's own train/test division (PARTS), if any
    defect_type: str = ""  # a review's subfolder of defective/ (the classes layout)

    @property
    def mask_known(self) -> bool:
        """Whether the image's defect pixels are known: none on a defect-free image, a
        defective one's only from its mask (the ``classes`` layout may have none)."""
        return not self.is_defective or self.mask_path is not None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in entries_of(folder) if _is_image_name(p.name))


def _is_image_name(name: str) -> bool:
    """An image's name, not a hidden file's: macOS leaves ``._NAME.png`` beside copied
    images (not images at all), notebooks ``.ipynb_checkpoints/`` copies of them."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _has_defect(mask_path: Path | None) -> bool:
    return mask_path is not None and bool(read_mask(mask_path).any())


def _sample(
    sample_id: str, image: Path, mask: Path | None, group: str, subset: str = ""
) -> SampleRef:
    """A sample whose label is its mask: defective where the mask marks any pixel."""
    return SampleRef(sample_id, image, mask, _has_defect(mask), group, subset)


def _within(parts: tuple[str, ...], inside: tuple[str, ...]) -> bool:
    """Whether the dataset's folder at ``parts`` is read when only its folder ``inside``
    is (empty: the whole dataset): it lies in that folder, or holds it."""
    common = min(len(parts), len(inside))
    return parts[:common] == inside[:common]


def read_kolektorsdd(root: Path, inside: tuple[str, ...] = ()) -> list[SampleRef]:
    samples = []
    folders = (p for p in entries_of(root, folders_only=True) if not p.name.startswith("."))
    for folder in sorted(p for p in folders if _within((p.name,), inside)):
        for image in _images_in(folder):
            if image.stem.endswith(LABEL_SUFFIX):
                continue
            masks = [image.with_name(f"{image.stem}{LABEL_SUFFIX}{s}") for s in (".bmp", ".png")]
            mask = next((m for m in masks if m.exists()), None)
            if mask is None:
                raise PsicbatchError(f"{image}: no label file {masks[0].name} or {masks[1].name}")
            samples.append(_sample(f"{folder.name}/{image.stem}", image, mask, folder.name))
    return samples


def read_kolektorsdd2(root: Path, inside: tuple[str, ...] = ()) -> list[SampleRef]:
    samples = []
    for subset in ("train", "test"):
        if not (root / subset).is_dir() or not _within((subset,), inside):
            continue
        for image in _images_in(root / subset):
            if image.stem.endswith(GT_SUFFIX):
                continue
            mask = image.with_name(f"{image.stem}{GT_SUFFIX}.png")
            if not mask.exists():
                raise PsicbatchError(f"{image}: no ground-truth file {mask.name}")
            sample_id = f"{subset}/{image.stem}"
            samples.append(_sample(sample_id, image, mask, sample_id, subset))
    return samples


def read_dagm(root: Path, inside: tuple[str, ...] = ()) -> list[SampleRef]:
    samples = []
    classes = sorted(
        p for p in entries_of(root, folders_only=True) if re.fullmatch(r"Class\d+", p.name)
    )
    for class_dir in classes:
        for subset in ("Train", "Test"):
            folder = class_dir / subset
            if not folder.is_dir() or not _within((class_dir.name, subset), inside):
                continue
            defective = _dagm_labels(folder)
            for image in _images_in(folder):
                mask_name = defective.get(image.stem)
                mask = folder / LABEL_FOLDER / mask_name if mask_name else None
                sample_id = f"{class_dir.name}/{subset}/{image.stem}"
                listed = mask is not None  # Labels.txt says which are defective
                kind = class_dir.name if listed else ""
                samples.append(
                    SampleRef(sample_id, image, mask, listed, sample_id, subset.lower(), kind)
                )
    return samples


def _dagm_labels(folder: Path) -> dict[str, str]:
    """Map image stem -> mask file name for the defective images of one DAGM folder.

    ``Label/Labels.txt`` lines read ``number  label  image_name  0  mask_name`` (label 1:
    defective), after a first line holding a count. Without that file, an image is
    defective when ``Label/NNNN_label.PNG`` exists.
    """
    labels_file = folder / LABEL_FOLDER / "Labels.txt"
    if not labels_file.exists():
        masks = folder / LABEL_FOLDER
        found = _images_in(masks) if masks.is_dir() else []
        return {p.stem.removesuffix(LABEL_SUFFIX): p.name for p in found}
    defective = {}
    try:
        text = regular_file_bytes(labels_file).decode(errors="replace")  # never a pipe
    except OSError as error:
        raise PsicbatchError(f"{labels_file}: cannot be read ({error.strerror or error})") from None
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or (line_number == 1 and len(fields) < 3):
            continue
        if len(fields) < 3 or fields[1] not in ("0", "1"):
            raise PsicbatchError(f"{labels_file}:{line_number}: unexpected line {line!r}")
        if fields[1] == "1":
            if len(fields) < 5:
                raise PsicbatchError(f"{labels_file}:{line_number}: defect without mask name")
            defective[Path(fields[2]).stem] = fields[4]
    return defective


def read_folder(root: Path, inside: tuple[str, ...] = ()) -> list[SampleRef]:
    """The whole dataset, whatever ``inside`` says: its one folder of images is all of it."""
    images_dir, masks_dir = root / "images", root / MASK_FOLDER
    if not images_dir.is_dir():
        raise PsicbatchError(f"{root}: the folder layout needs an images/ subfolder")
    masks = {p.stem: p for p in _images_in(masks_dir)} if masks_dir.is_dir() else {}
    samples = []
    for image in _images_in(images_dir):
        mask = masks.get(image.stem)
        samples.append(_sample(image.stem, image, mask, image.stem))
    return samples


GOOD_FOLDERS = ("good", "ok")  # the classes layout's folder names, in any case
DEFECTIVE_FOLDERS = ("defective", "ng")


def read_classes(root: Path, inside: tuple[str, ...] = ()) -> list[SampleRef]:
    folders = {
        p.name.lower(): p for p in entries_of(root, folders_only=True) if _within((p.name,), inside)
    }
    good = [folders[name] for name in GOOD_FOLDERS if name in folders]
    defective = [folders[name] for name in DEFECTIVE_FOLDERS if name in folders]
    if not good and not defective:
        raise PsicbatchError(
            f"{root}: the classes layout needs a good/ (or ok/) or a defective/ (or ng/) subfolder"
        )
    masks_dir = root / MASK_FOLDER
    masks = (  # by path in masks/ without the extension: "scratch/x" or "x"
        {p.relative_to(masks_dir).with_suffix("").as_posix(): p for p in _images_below(masks_dir)}
        if masks_dir.is_dir()
        else {}
    )
    samples = []
    for folder in good:
        for image in _images_below(folder):
            mask, _ = _class_mask(masks, image, folder)
            if _has_defect(mask):
                raise PsicbatchError(
                    f"{image}: in {folder.name}/, but its mask {mask} marks defect pixels"
                )
            sample_id = image.relative_to(root).with_suffix("").as_posix()
            samples.append(SampleRef(sample_id, image, None, False, sample_id))
    by_name: dict[str, Path] = {}  # defective images, for masks found by name
    for folder in defective:
        for image in _images_below(folder):
            mask, named = _class_mask(masks, image, folder)
            if named and image.stem in by_name:
                raise PsicbatchError(
                    f"{image}: its mask {mask} could as well be that of {by_name[image.stem]} "
                    f"(masks are found by name); rename one of them, or give each its mask "
                    f"at its own path in {MASK_FOLDER}/"
                )
            by_name[image.stem] = image
            sample_id = image.relative_to(root).with_suffix("").as_posix()
            kind = image.parent.relative_to(folder).as_posix()  # "." directly in it
            samples.append(
                SampleRef(
                    sample_id,
                    image,
                    mask if _has_defect(mask) else None,
                    True,
                    sample_id,
                    defect_type="" if kind == "." else kind,
                )
            )
    return samples


def _class_mask(masks: dict[str, Path], image: Path, folder: Path) -> tuple[Path | None, bool]:
    """An image's mask in the classes layout, and whether it was found by name alone: at
    the image's own path under masks/ (``defective/scratch/x.png``: ``masks/scratch/x.png``),
    else by name (``masks/x.png``)."""
    own = image.relative_to(folder).with_suffix("").as_posix()
    if own in masks:
        return masks[own], False
    mask = masks.get(image.stem)
    return mask, mask is not None


def _images_below(folder: Path) -> list[Path]:
    """Images in ``folder`` and its subfolders (a review may sort defects by type;
    ``files_below``)."""
    return sorted(
        p
        for p in files_below(folder)
        if _is_image_name(p.name)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


PARTS = ("train", "test")  # the published division of kolektorsdd2 and dagm

LAYOUTS: dict[str, Callable[[Path, tuple[str, ...]], list[SampleRef]]] = {
    "kolektorsdd": read_kolektorsdd,
    "kolektorsdd2": read_kolektorsdd2,
    "dagm": read_dagm,
    "folder": read_folder,
    "classes": read_classes,
}


def require_masks(samples: list[SampleRef], why: str) -> None:
    """Every defective image needs its mask, ``why`` (said in the error)."""
    unmasked = [sample for sample in samples if not sample.mask_known]
    if unmasked:
        more = f" (and {len(unmasked) - 1} more)" if len(unmasked) > 1 else ""
        raise PsicbatchError(
            f"{unmasked[0].image_path}{more}: defective without a mask; {why} (add "
            f"{MASK_FOLDER}/NAME.png marking its defect)"
        )


AUTO = "auto"  # --layout auto: the one layout the folder's top level matches


def matching_layouts(root: Path) -> list[str]:
    """The layouts a folder looks like from its top level, in ``LAYOUTS``' order."""
    try:
        folders = {p.name for p in entries_of(root, folders_only=True)}
    except OSError:  # not a folder, or not readable: the caller's error says so
        return []
    signs = {
        "kolektorsdd": any(re.fullmatch(r"kos\d+", name) for name in folders),
        "kolektorsdd2": bool(folders & {"train", "test"}),
        "dagm": any(re.fullmatch(r"Class\d+", name) for name in folders),
        "folder": "images" in folders,
        "classes": bool({n.lower() for n in folders} & {*GOOD_FOLDERS, *DEFECTIVE_FOLDERS}),
    }
    return [layout for layout in LAYOUTS if signs[layout]]


# The folders of a dataset that are read as that part of it, by their names from the
# dataset's folder down (regular expressions, matched whole).
DATASET_FOLDERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "kolektorsdd": ((r"kos\d+",),),
    "kolektorsdd2": ((r"train|test",),),
    "dagm": ((r"Class\d+",), (r"Class\d+", r"Train|Test")),
    "folder": (("images",),),
    "classes": ((r"(?i)good|ok|defective|ng",),),
}


@dataclass(frozen=True)
class DatasetFolder:
    """A folder that is one part of a dataset: the dataset's folder, its layout, and the
    folder's path inside it (``("Class3", "Test")``)."""

    dataset: Path
    layout: str
    inside: tuple[str, ...]


def folder_of_dataset(root: Path, layout: str = AUTO) -> DatasetFolder | None:
    """Where ``root`` is no dataset in ``layout`` (``auto``: in any) but one folder of a
    dataset in it, which: a user inspecting or scoring a few of KolektorSDD's parts
    gives their ``kosNN`` folders, not a copy of them laid out as a dataset."""
    matched = matching_layouts(root)
    if matched and (layout == AUTO or layout in matched):
        return None
    names = Path(os.path.abspath(root)).parts
    for depth in (1, 2):
        if len(names) <= depth:  # above the file system's root: no dataset
            break
        inside = names[len(names) - depth :]
        dataset = Path(os.path.normpath(os.path.join(root, *[".."] * depth)))
        for name in LAYOUTS if layout == AUTO else (layout,):
            patterns = DATASET_FOLDERS.get(name, ())
            if any(_names_match(pattern, inside) for pattern in patterns) and (
                name in matching_layouts(dataset)
            ):
                return DatasetFolder(dataset, name, inside)
    return None


def _names_match(patterns: tuple[str, ...], names: tuple[str, ...]) -> bool:
    return len(patterns) == len(names) and all(map(re.fullmatch, patterns, names))


def guess_layout(root: Path) -> str | None:
    """The layout a folder (or the dataset it is a folder of) looks like (None: none of
    them), so a wrong or forgotten ``--layout`` can be answered with the right one."""
    found = matching_layouts(root)
    if not found:
        part = folder_of_dataset(root)
        return None if part is None else part.layout
    return found[0] if len(found) == 1 else None


def resolve_layout(root: Path, layout: str) -> str:
    """``layout``, or for ``auto`` the one layout ``root`` looks like; a one-line error
    where it looks like none or like several."""
    if layout != AUTO:
        return layout
    found = matching_layouts(root)
    if len(found) == 1:
        return found[0]
    if not root.is_dir():
        raise PsicbatchError(f"{root}: not a folder")
    if found:
        raise PsicbatchError(
            f"{root}: looks like the {' and the '.join(found)} layouts; choose one with --layout"
        )
    part = folder_of_dataset(root)
    if part is not None:
        return part.layout
    raise PsicbatchError(
        f"{root}: not a dataset layout psicbatch knows (images/ for folder, good/ or ng/ "
        "for classes, kosNN/, ClassN/, train/ or test/) nor one of their folders; choose "
        "one with --layout"
    )


def read_dataset(root: Path, layout: str) -> list[SampleRef]:
    """All samples of a dataset, or of the part of one that ``root`` is a folder of (ids
    and groups as in the whole dataset); a clear error for an unknown layout or an empty
    folder, naming the layout the folder looks like when that is another."""
    layout = resolve_layout(root, layout)
    if layout not in LAYOUTS:
        raise PsicbatchError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise PsicbatchError(f"{root}: not a folder")
    part = folder_of_dataset(root, layout)
    dataset, inside = (root, ()) if part is None else (part.dataset, part.inside)
    try:
        samples = LAYOUTS[layout](dataset, inside)
        if not samples:
            raise PsicbatchError(f"{root}: no images found in the {layout!r} layout")
    except PsicbatchError as error:
        guess = guess_layout(root)
        if guess is None or guess == layout:
            raise
        raise PsicbatchError(f"{error}; it looks like --layout {guess}") from None
    return samples
