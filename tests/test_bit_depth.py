"""12/16-bit grayscale images at full range: both decoders, training, runs and the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from psicbatch.api import Inspector
from psicbatch.checkpoint import load_checkpoint, save_checkpoint, untrained_checkpoint
from psicbatch.cli import main
from psicbatch.model import ModelConfig
from psicbatch.preprocess import Normalizer, Preprocessing
from psicbatch.run.decode import DaliDecoder, PilDecoder, dali_available
from psicbatch.run.output import read_metadata

DECODERS = [
    "pil",
    pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="no DALI")),
]


def low_byte_image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """16-bit pixels whose signal lies only in the low byte (values 0..255): 8-bit reading
    (v / 257) makes them 0 or 1 everywhere."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width), dtype=np.uint16)
    image[10:14, 5:50] = 255  # a bright scratch, bright only in 16-bit terms
    return image


def decoder(kind: str, preprocessing: Preprocessing) -> PilDecoder | DaliDecoder:
    return PilDecoder(preprocessing) if kind == "pil" else DaliDecoder(preprocessing, 4)


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_low_byte_signal_is_not_flattened(kind: str, suffix: str, tmp_path: Path) -> None:
    pixels = low_byte_image()
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(pixels).save(path)
    deep = Preprocessing(pixels.shape, bit_depth=16)
    decoded = decoder(kind, deep).decode([path])
    assert decoded.errors == {} and decoded.images is not None
    assert decoded.images.dtype == torch.uint16
    assert np.array_equal(decoded.images[0, 0].numpy(), pixels)  # full range, as stored
    flat = decoder(kind, Preprocessing(pixels.shape)).decode([path]).images
    assert flat is not None and len(torch.unique(flat)) <= 2  # what 8 bits would keep


@pytest.mark.parametrize("kind", DECODERS)
def test_resized_16_bit_pixels_agree_between_decoders(kind: str, tmp_path: Path) -> None:
    pixels = (low_byte_image(80, 112).astype(np.uint32) * 200).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    half = Preprocessing((40, 56), bit_depth=16)
    reference = PilDecoder(half).decode([path]).images
    images = decoder(kind, half).decode([path]).images
    assert reference is not None and images is not None and images.dtype == torch.uint16
    difference = (images.int() - reference.int()).abs().float() / 257  # in 8-bit levels
    assert difference.mean() < 0.5 and difference.max() < 12


def test_normalisation_scales_by_the_bit_depth() -> None:
    pixels = torch.tensor([0, 4095, 5000, 65535], dtype=torch.uint16).view(1, 1, 1, 4)
    sixteen = Normalizer(Preprocessing((1, 4), mean=(0.0,), std=(1.0,), bit_depth=16), "cpu")
    assert sixteen(pixels).flatten().tolist() == pytest.approx([0, 4095 / 65535, 5000 / 65535, 1])
    twelve = Normalizer(Preprocessing((1, 4), mean=(0.0,), std=(1.0,), bit_depth=12), "cpu")
    assert twelve(pixels).flatten().tolist() == [0, 1, 1, 1]  # 12 bits: above 4095 clipped


def test_preprocessing_records_its_depth_and_older_files_read_as_8_bits() -> None:
    deep = Preprocessing((8, 8), bit_depth=16)
    assert deep.to_dict()["bit_depth"] == 16 and deep.to_dict()["scale"] == "pixel / 65535"
    assert Preprocessing.from_dict(deep.to_dict()) == deep
    older = {"input_size": [8, 8], "mean": [0.5], "std": [0.25]}
    assert Preprocessing.from_dict(older).bit_depth == 8
    with pytest.raises(ValueError, match="bit depth"):
        Preprocessing((8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, bit_depth=16)


def deep_model(path: Path, size: tuple[int, int]) -> Path:
    checkpoint = untrained_checkpoint(ModelConfig(width=0.125), size)
    checkpoint.preprocessing = Preprocessing(size, bit_depth=16)
    return save_checkpoint(checkpoint, path)


@pytest.mark.parametrize("kind", DECODERS)
def test_a_16_bit_model_refuses_an_8_bit_file_in_one_row(kind: str, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(low_byte_image()).save(folder / "deep.png")
    Image.fromarray(low_byte_image(seed=1)).save(folder / "deep.tif")
    Image.fromarray(np.full((40, 56), 90, np.uint8)).save(folder / "plain.png")
    model, out = deep_model(tmp_path / "deep.pt", (40, 56)), tmp_path / "r.parquet"
    args = ["run", str(folder), "--model", str(model), "-o", str(out), "--decoder", kind, "-q"]
    result = CliRunner().invoke(main, [*args, "--precision", "fp32"])
    assert result.exit_code == 3, result.output  # some images failed, the run did not
    rows = {Path(row["path"]).name: row for row in pq.read_table(out).to_pylist()}
    assert rows["deep.png"]["error"] is None and rows["deep.tif"]["error"] is None
    assert rows["plain.png"]["error"].startswith("an 8-bit image, but the model reads 16-bit")
    assert read_metadata(out)["engine"]["preprocessing"]["bit_depth"] == 16


def test_api_arrays_of_16_bits_give_what_their_files_give(tmp_path: Path) -> None:
    pixels = low_byte_image()
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    model = deep_model(tmp_path / "deep.pt", pixels.shape)
    with Inspector(model, device="cpu", precision="fp32") as inspector:
        from_file, from_array = inspector.inspect([tmp_path / "deep.png"]), None
        file_result = next(iter(from_file))
        from_array = next(iter(inspector.inspect([pixels])))
    assert file_result.error is None and from_array.error is None
    assert file_result.probability == from_array.probability


def test_train_reads_16_bit_files_at_full_range(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for index in range(6):
        pixels = low_byte_image(48, 48, seed=index) // 4
        if index % 2:
            pixels[20:24, 4:44] = 255  # the defect lives in the low byte
            mask = np.zeros((48, 48), np.uint8)
            mask[20:24, 4:44] = 255
            Image.fromarray(mask).save(data / "masks" / f"{index}.png")
        Image.fromarray(pixels).save(data / "images" / f"{index}.png")
    tiny = ["--width", "0.125", "--input-size", "48x48", "--seg-epochs", "1", "--cls-epochs", "1"]
    model = tmp_path / "m.pt"
    result = CliRunner().invoke(main, ["train", str(data), "-o", str(model), "-q", *tiny])
    assert result.exit_code == 0, result.output
    preprocessing = load_checkpoint(model).preprocessing
    assert preprocessing.bit_depth == 16  # auto: the files' depth
    assert preprocessing.mean[0] < 100 / 65535  # normalised from full-range pixels
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(data / "images" / "6.png")
    refused = CliRunner().invoke(main, ["train", str(data), "-o", str(tmp_path / "n.pt"), *tiny])
    assert refused.exit_code == 1
    assert refused.output.strip().endswith(
        "6.png: an 8-bit image, but the model reads 16-bit "
        "grayscale (give it the camera's 16-bit files, or "
        "use a model trained on 8-bit images)"
    )


@pytest.mark.skipif(not dali_available(), reason="no DALI")
def test_a_file_dali_cannot_read_falls_back_to_pil(tmp_path: Path) -> None:
    """A bilevel TIFF (PIL leaves out BitsPerSample, which DALI requires) in a batch with
    a PNG: DALI's batch fails, and the TIFF gets PIL's pixels instead of an error row."""
    pixels = np.random.default_rng(0).random((40, 56)) > 0.5
    Image.fromarray(pixels).save(tmp_path / "bilevel.tif")
    Image.fromarray(low_byte_image().astype(np.uint8)).save(tmp_path / "plain.png")
    files = [tmp_path / "bilevel.tif", tmp_path / "plain.png"]
    size = Preprocessing((40, 56))
    dali, pil = DaliDecoder(size, 4).decode(files), PilDecoder(size).decode(files)
    assert dali.errors == pil.errors == {} and dali.positions == pil.positions == [0, 1]
    assert dali.images is not None and pil.images is not None
    assert torch.equal(dali.images, pil.images)
