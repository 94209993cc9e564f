"""Decoding and preprocessing image files into engine input, with per-file errors.

Two decoders with one interface and the same preprocessing (resize to the engine size,
scale to [0, 1], normalise with the checkpoint's mean/std):

- ``DaliDecoder``: NVIDIA DALI, GPU decoding (``mixed``) with a device id, CPU operators
  without one. DALI fails a whole batch on one bad file and the pipeline cannot be used
  again, so a failed batch is retried file by file on fresh pipelines to name the bad
  file(s) and keep every good image.
- ``PilDecoder``: PIL in a thread pool, when DALI is not installed.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from psicbatch.checkpoint import Preprocessing
from psicbatch.data.images import ImageReadError, read_image
from psicbatch.preprocess import normalize, resize_image

MAX_PIXELS = 100_000_000  # far above any inspection camera, far below a decompression bomb


@dataclass
class DecodedBatch:
    """Good images of one batch (in order) and the errors of the others, by position."""

    positions: list[int] = field(default_factory=list)
    images: np.ndarray | None = None  # float32 N x C x H x W, one per position
    sizes: list[tuple[int, int]] = field(default_factory=list)  # original (H, W)
    errors: dict[int, str] = field(default_factory=dict)


def read_bytes(path: Path) -> np.ndarray:
    """The file's bytes, or an ImageReadError saying why they cannot be used."""
    try:
        data = path.read_bytes()
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot be read ({error.strerror or error})") from None
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    _check_dimensions(path, data)
    return np.frombuffer(data, dtype=np.uint8)


def _check_dimensions(path: Path, data: bytes) -> None:
    """Refuse images whose header claims more than MAX_PIXELS before anything decodes them
    (a 20000x20000 header would make a decoder allocate gigabytes). Formats PIL cannot
    identify are left to the decoder, which reports its own error."""
    too_large = f"above the {MAX_PIXELS / 1e6:.0f} megapixel limit"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise ImageReadError(path, f"image is far too large ({too_large})") from None
    except Exception:  # unknown or damaged header: the decoder says what is wrong
        return
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels), {too_large}",
        )


class PilDecoder:
    name = "pil"

    def __init__(self, preprocessing: Preprocessing, channels: int, threads: int = 2) -> None:
        self.preprocessing = preprocessing
        self.channels = channels
        self.pool = ThreadPoolExecutor(max_workers=threads)

    def _one(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        read_bytes(path)  # same up-front checks (empty, unreadable) as the DALI decoder
        image = read_image(path, self.channels)
        resized = resize_image(image, self.preprocessing.input_size).transpose(2, 0, 1)
        tensor = torch.from_numpy(resized.copy())[None]
        return normalize(tensor, self.preprocessing)[0].numpy(), image.shape[:2]

    def decode(self, paths: list[Path]) -> DecodedBatch:
        return _collect(list(self.pool.map(_capture(self._one), paths)))

    def close(self) -> None:
        self.pool.shutdown()


class DaliDecoder:
    name = "dali"

    def __init__(
        self,
        preprocessing: Preprocessing,
        channels: int,
        batch_size: int,
        threads: int = 2,
        device_id: int | None = None,
    ) -> None:
        self.preprocessing = preprocessing
        self.channels = channels
        self.batch_size = batch_size
        self.threads = threads
        self.device_id = device_id
        self.pipeline = self._build()

    def _build(self) -> object:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        p = self.preprocessing
        height, width = p.input_size
        gpu = self.device_id is not None

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.threads,
            device_id=self.device_id,
            prefetch_queue_depth=1,
            exec_async=False,
            exec_pipelined=False,
        )
        def pipeline():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            decoded = fn.decoders.image(
                encoded,
                device="mixed" if gpu else "cpu",
                output_type=types.GRAY if self.channels == 1 else types.RGB,
            )
            resized = fn.resize(
                decoded,
                resize_x=width,
                resize_y=height,
                interp_type=types.INTERP_LINEAR,
                antialias=True,
            )
            normalized = fn.crop_mirror_normalize(
                resized,
                dtype=types.FLOAT,
                output_layout="CHW",
                mean=[m * 255 for m in p.mean],
                std=[s * 255 for s in p.std],
            )
            return normalized, decoded.shape()

        built = pipeline()
        built.build()
        return built

    def _run(self, data: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        self.pipeline.feed_input("encoded", data)
        images, shapes = self.pipeline.run()
        if self.device_id is not None:
            images = images.as_cpu()
        shapes = shapes.as_cpu() if hasattr(shapes, "as_cpu") else shapes
        return (
            [np.array(images[i]) for i in range(len(data))],
            [tuple(int(v) for v in np.array(shapes[i])[:2]) for i in range(len(data))],
        )

    def decode(self, paths: list[Path]) -> DecodedBatch:
        results: list[tuple[np.ndarray, tuple[int, int]] | str] = []
        readable: list[tuple[int, Path, np.ndarray]] = []
        for position, path in enumerate(paths):
            try:
                readable.append((position, path, read_bytes(path)))
                results.append("")
            except ImageReadError as error:
                results.append(error.problem)
        if readable:
            try:
                images, sizes = self._run([data for _, _, data in readable])
                for (position, _, _), image, size in zip(readable, images, sizes, strict=True):
                    results[position] = (image, size)
            except RuntimeError:
                self._isolate(readable, results)
        return _collect(results)

    def _isolate(self, readable: list, results: list) -> None:
        """After a failed batch: fresh pipeline, one file at a time."""
        self.pipeline = self._build()
        for position, path, data in readable:
            try:
                images, sizes = self._run([data])
                results[position] = (images[0], sizes[0])
            except RuntimeError as error:
                results[position] = _diagnose(path, error)
                self.pipeline = self._build()

    def close(self) -> None:
        self.pipeline = None


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def decoder_name(kind: str) -> str:
    """Which decoder ``kind`` resolves to here: ``auto`` is DALI when installed, else PIL."""
    return "dali" if kind == "dali" or (kind == "auto" and dali_available()) else "pil"


def make_decoder(
    kind: str,
    preprocessing: Preprocessing,
    channels: int,
    batch_size: int,
    threads: int,
    device_id: int | None,
) -> PilDecoder | DaliDecoder:
    if decoder_name(kind) == "dali":
        return DaliDecoder(preprocessing, channels, batch_size, threads, device_id)
    return PilDecoder(preprocessing, channels, threads)


def _capture(function: Callable) -> Callable:
    def wrapped(path: Path) -> object:
        try:
            return function(path)
        except ImageReadError as error:
            return error.problem
        except Exception as error:  # a decoder library failing on one file must not stop a run
            return f"not a decodable image ({type(error).__name__}: {error})"

    return wrapped


def _collect(results: list) -> DecodedBatch:
    batch = DecodedBatch()
    images = []
    for position, result in enumerate(results):
        if isinstance(result, str):
            batch.errors[position] = result
        else:
            batch.positions.append(position)
            images.append(result[0])
            batch.sizes.append(result[1])
    if images:
        batch.images = np.stack(images).astype(np.float32, copy=False)
    return batch


def _diagnose(path: Path, error: Exception) -> str:
    """Why DALI rejected a file: PIL's diagnosis when it has one, else DALI's message."""
    try:
        read_image(path, 1)
    except ImageReadError as pil_error:
        return pil_error.problem
    except Exception:  # PIL failing differently still leaves DALI's reason
        pass
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "failure" in line.lower() or "error" in line.lower()]
    reason = (useful[-1] if useful else "decoder error").rstrip(".")
    return f"DALI could not decode it ({reason})"
