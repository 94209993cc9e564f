"""CPU int8 engines: separate calibration and parity images, and what ``--backend auto
--precision auto --no-tune`` picks on a CPU (int8 only with calibration images, int8 dot
products and parity; otherwise torch in the CPU's native float precision)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from psicbatch import hardware
from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.engines.build import BuildOptions, build_engine
from psicbatch.engines.loading import load_engine
from psicbatch.engines.quantize import _stride
from psicbatch.errors import PsicbatchError
from psicbatch.precision import cpu_auto

cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason="auto picks GPU engines where a GPU is visible"
)
NATIVE_FLOAT = cpu_auto().precision  # bf16 where native, else fp32
# this CPU as it is, but with int8 dot products: --no-tune picks int8 only on such CPUs
WITH_INT8_DOT = dataclasses.replace(hardware.cpu_precisions(), int8_dot=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Calibration and parity images from different seeds: no file in common."""
    root = tmp_path_factory.mktemp("int8")
    generate(root / "calib", 24, (128, 128), defect_rate=0.5, seed=21)
    generate(root / "parity", 12, (128, 128), defect_rate=0.5, seed=22)
    return root / "calib" / "images", root / "parity" / "images"


def test_openvino_int8_keeps_parity_on_separate_parity_images(folders, tmp_path: Path) -> None:
    calib, parity_images = folders
    options = BuildOptions(
        backend="openvino",
        precision="int8",
        max_batch=4,
        calib=calib,
        parity_images=parity_images,
        out=tmp_path / "int8",
    )
    directory, manifest = build_engine(demo_model_path(), options)
    parity = manifest.parity
    assert parity["source"] == f"--parity-images {parity_images}"
    assert (parity["images"], parity["calibration_images"]) == (12, 24)
    assert parity["decision_flips"] == 0
    assert parity["images_judged_defective"] >= 4
    assert parity["mask_iou_mean_judged_defective"] >= 0.9
    engine = load_engine(directory, "cpu")
    probabilities, masks = engine.infer(torch.zeros(3, 1, 128, 128))
    assert probabilities.shape == (3,) and masks.shape == (3, 128, 128)


def test_parity_images_may_not_overlap_calibration(folders) -> None:
    calib, _ = folders
    options = BuildOptions(backend="openvino", precision="int8", calib=calib, parity_images=calib)
    with pytest.raises(PsicbatchError, match=r"share 24 image\(s\).*calibration did not see"):
        build_engine(demo_model_path(), options)


def test_one_calibration_image_cannot_be_split(folders, tmp_path: Path) -> None:
    calib, _ = folders
    single = tmp_path / "one"
    single.mkdir()
    (single / "a.png").write_bytes(next(calib.iterdir()).read_bytes())
    options = BuildOptions(backend="openvino", precision="int8", calib=single)
    with pytest.raises(PsicbatchError, match=r"one image cannot be split.*--parity-images"):
        build_engine(demo_model_path(), options)


@cpu_only
def test_auto_picks_int8_with_calibration_images_and_parity(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU with int8 dot products (without them it keeps the float engine)."""
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: WITH_INT8_DOT)
    calib, _ = folders
    result = CliRunner().invoke(
        main,
        [
            "build-engine",
            str(demo_model_path()),
            "--calib",
            str(calib),
            "--no-tune",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    chose = "chose openvino int8: calibration images given, and parity with fp32 held"
    assert chose in result.output
    assert "(held out of --calib" in result.output and "0 decision flips" in result.output
    assert "] openvino int8: calibrating int8 ranges on 18 images" in result.output


@cpu_only
def test_auto_picks_the_native_float_without_calibration_images(tmp_path: Path) -> None:
    options = BuildOptions(out=tmp_path / "e", tune=False)
    _, manifest = build_engine(demo_model_path(), options)
    assert (manifest.backend, manifest.precision) == ("torch", NATIVE_FLOAT)
    assert manifest.selection == f"int8 needs calibration images (--calib DIR); {cpu_auto().reason}"
    assert manifest.parity["source"] == "synthetic"


@cpu_only
def test_auto_falls_back_to_the_native_float_when_int8_fails_parity(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable mask IoU makes int8 fail; its parity check is enforced even with
    --no-parity-check (it decides the choice), which then keeps the float engine."""
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: WITH_INT8_DOT)
    calib, _ = folders
    options = BuildOptions(
        calib=calib, min_mask_iou=1.01, check_parity=False, out=tmp_path / "e", tune=False
    )
    directory, manifest = build_engine(demo_model_path(), options)
    assert (manifest.backend, manifest.precision) == ("torch", NATIVE_FLOAT)
    assert manifest.selection.startswith("the int8 engine failed its parity check (")
    assert "below 1.01" in manifest.selection
    assert load_engine(directory).manifest.selection == manifest.selection
    assert not any(p.name.endswith(".building") for p in tmp_path.iterdir())


@pytest.mark.parametrize(("count", "stride"), [(24, 8), (132, 6), (7, 7), (1, 1), (11, 1)])
def test_calibration_chunks_divide_the_image_count(count: int, stride: int) -> None:
    """The calibrator merges ranges chunk by chunk and needs chunks that divide the count."""
    assert _stride(count) == stride
