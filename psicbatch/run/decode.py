"""Decoding and preprocessing image files into engine input, with per-file errors.

Two decoders with one interface and the same preprocessing up to the engine's input
size (decode, colour, bit depth, resize), both giving uint8 N x C x H x W (uint16 for
12/16-bit models): one or two bytes per pixel to upload, normalised on the engine's
device by the worker (``preprocess.Normalizer``):

- ``DaliDecoder``: NVIDIA DALI, GPU decoding (``mixed``) on a GPU worker, CPU operators
  otherwise. The pipeline's output reaches torch without a copy, on the same device (GPU
  memory for ``mixed``: no round trip through the host), through DLPack on a CUDA stream
  of the decoder's own, which it waits for: never behind the engine's work. DALI fails a
  whole batch on one bad file and the pipeline cannot be used again, so a failed batch,
  or one past its time budget (``batch_budget``), is retried file by file on fresh
  pipelines to name the bad file(s) and keep every good one.
- ``PilDecoder``: PIL in a thread pool, when DALI is not installed, and for tiled models
  (each image cut at native resolution into the engine's tiles, ``tiles.TileGrid``).

Original sizes come from the file headers (read anyway to refuse oversized images), so
the DALI graph has no GPU-to-CPU shape output; it runs under DALI's dynamic executor,
whose outputs live as long as their holders.
For GPU engines, host tensors are allocated in pinned memory so that the upload is an
asynchronous copy. ``NullDecoder`` hands out one ready, already normalised batch (as if
decoded and normalised on the GPU), to measure everything after decoding.
"""

from __future__ import annotations

import importlib.util
import queue
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from PIL import Image

from psicbatch.data.images import (
    UNREADABLE,
    ImageReadError,
    at_bit_depth,
    read_image,
)
from psicbatch.errors import PsicbatchError
from psicbatch.preprocess import Preprocessing, engine_input, read_chw
from psicbatch.run.batch_budget import BatchBudget
from psicbatch.run.files import FileLimits, FileStamp, current_stamp
from psicbatch.run.headers import read_bytes
from psicbatch.run.limited import TimeLimitExceeded, call_limited, run_limited
from psicbatch.tiles import TileGrid

DEFAULT_LIMITS = FileLimits()
MAX_DECODING_BATCHES = 4  # batches a decoder takes at once, at most


@dataclass
class DecodedBatch:
    """Good images of one batch (in order) and the errors of the others, by position."""

    positions: list[int] = field(default_factory=list)
    # uint8 N x C x H x W, one per position (the null decoder: float32 network input)
    images: torch.Tensor | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)  # original (H, W)
    errors: dict[int, str] = field(default_factory=dict)
    # A tiled model's: each image's grid, its tiles following each other in ``images``
    grids: list[TileGrid] = field(default_factory=list)
    stamps: dict[int, FileStamp] = field(default_factory=dict)  # every file that was read


class Decoder(Protocol):
    """What a worker needs of a decoder: file names (or names of in-memory images) in,
    one batch out, with each file's error apart. ``at_once``: how many batches ``decode``
    may be given at the same time."""

    at_once: int

    def decode(self, paths: list[Path]) -> DecodedBatch: ...

    def close(self) -> None: ...


def _timed_out(limits: FileLimits) -> str:
    return f"decoding took longer than {limits.decode_seconds:g} s (--decode-timeout)"


@dataclass
class PilDecoder:
    """PIL in threads, each file within its decoding time limit."""

    preprocessing: Preprocessing
    threads: int = 2
    pin: bool = False  # host tensors in pinned memory, for GPU engines
    limits: FileLimits = DEFAULT_LIMITS
    at_once: int = 1  # any number: each call has its own threads, no shared state
    name: ClassVar[str] = "pil"

    def _one(self, path: Path) -> tuple[np.ndarray, tuple[int, int] | TileGrid, FileStamp]:
        depth = self.preprocessing.bit_depth
        data, _, stamp = read_bytes(path, self.limits.max_bytes, depth)
        try:
            image = read_image(path, self.preprocessing.channels, data, depth)
        except ImageReadError as error:
            raise StampedError(error.problem, stamp) from None
        return *engine_input(image, self.preprocessing), stamp

    def decode(self, paths: list[Path]) -> DecodedBatch:
        calls = [partial(self._one, path) for path in paths]
        return _collect(_limited_outcomes(calls, paths, self.threads, self.limits), self.pin)

    def close(self) -> None:
        pass


class StampedError(Exception):
    """A file that was read (so it has a stamp) but could not be decoded."""

    def __init__(self, problem: str, stamp: FileStamp) -> None:
        super().__init__(problem)
        self.problem, self.stamp = problem, stamp


def _each(calls: list[partial]) -> list[Any]:
    """Each call's result or exception, in order."""
    results: list[Any] = []
    for call in calls:
        try:
            results.append(call())
        except Exception as error:
            results.append(error)
    return results


def _limited_outcomes(
    calls: list[partial], paths: list[Path], threads: int, limits: FileLimits
) -> list[Any]:
    """Each call's outcome (``_outcome``), ``threads`` at a time, each within the
    decoding limit; for one past it, the version of its file that took so long."""
    results = run_limited(calls, threads, limits.decode_seconds)
    outcomes = [_outcome(result, limits) for result in results]
    for position, result in enumerate(results):
        if isinstance(result, TimeLimitExceeded):
            outcomes[position] = (outcomes[position][0], current_stamp(paths[position]))
    return outcomes


def _outcome(result: object, limits: FileLimits) -> Any:
    """A decoded image, or (problem, stamp or None) for a file that gave none."""
    if isinstance(result, StampedError):
        return result.problem, result.stamp
    if isinstance(result, ImageReadError):
        return result.problem, None
    if isinstance(result, TimeLimitExceeded):
        return _timed_out(limits), None
    if isinstance(result, Exception):  # a decoder library failing on one file
        return f"not a decodable image ({type(result).__name__}: {result})", None
    return result


@dataclass
class DaliDecoder:
    """NVIDIA DALI: on GPU ``device_id`` (``mixed`` decoding), else its CPU operators."""

    preprocessing: Preprocessing
    batch_size: int
    threads: int = 2
    device_id: int | None = None
    pin: bool = False
    limits: FileLimits = DEFAULT_LIMITS
    name: ClassVar[str] = "dali"
    at_once = 1  # one pipeline, one batch at a time (``DecoderPool``: several)

    def __post_init__(self) -> None:
        self.pipeline = self._build()
        self.stream: torch.cuda.Stream | None = None  # the copies' own, made at first use
        self.budget = BatchBudget(self.limits.decode_seconds)

    def _build(self) -> Any:
        built = define_pipeline(self.preprocessing, self.batch_size, self.threads, self.device_id)
        built.build()
        return built

    def _run(self, data: list[np.ndarray]) -> torch.Tensor:
        """Decode and resize ``data``; the result stays on the decoding device. DALI's
        dynamic executor leaves each output buffer to whoever holds it, so the tensor is
        DALI's own memory through DLPack (no copy); only CPU-decoded pixels bound for a
        GPU are copied, into pinned memory for an asynchronous upload. Whoever launches
        GPU work on DALI's memory holds the tensor until that work is done: it is not
        torch's, so ``record_stream`` cannot keep it from reuse."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        self.pipeline.feed_input("encoded", data)
        (images,) = self.pipeline.run()
        # 16-bit pixels leave DALI reinterpreted as int16 and are viewed as uint16 again
        # here: the same bits.
        wide = self.preprocessing.bit_depth > 8
        if self.device_id is None and self.pin:
            shape = (len(data), self.preprocessing.channels, *self.preprocessing.input_size)
            target = torch.empty(shape, dtype=torch.int16 if wide else torch.uint8, pin_memory=True)
            feed_ndarray(images.as_tensor(), target)
        elif self.device_id is None:
            target = torch.from_dlpack(images.as_tensor())
        else:
            if self.stream is None:
                self.stream = torch.cuda.Stream(torch.device("cuda", self.device_id))
            with torch.cuda.stream(self.stream):  # DLPack orders this stream after DALI's
                target = torch.from_dlpack(images.as_tensor())
            # Decoded by the time any other stream reads it: wait, in the decoding thread,
            # for DALI's work alone (this stream holds nothing else).
            self.stream.synchronize()
        return target.view(torch.uint16) if wide else target

    def decode(self, paths: list[Path]) -> DecodedBatch:
        batch = DecodedBatch()
        readable: list[tuple[int, Path, bytes, tuple[int, int]]] = []
        for position, (path, outcome) in enumerate(zip(paths, self._read(paths), strict=True)):
            if isinstance(outcome[0], str):
                batch.errors[position], stamp = outcome
                if stamp is not None:
                    batch.stamps[position] = stamp
                continue
            data, size, batch.stamps[position] = outcome
            if size is None:
                batch.errors[position] = _diagnose(path, data)
            else:
                readable.append((position, path, data, size))
        if not readable:
            return batch
        arrays = [np.frombuffer(data, dtype=np.uint8) for _, _, data, _ in readable]
        try:
            images = self._run_timed(arrays, self.budget.seconds(len(arrays)))
        except (RuntimeError, TimeLimitExceeded):
            return self._isolate(readable, batch)
        batch.positions = [position for position, _, _, _ in readable]
        batch.sizes = [size for _, _, _, size in readable]
        batch.images = images
        return batch

    def _read(self, paths: list[Path]) -> list[Any]:
        """Each file's bytes, header size and stamp, or why not (``_outcome``), within
        the limit as PIL's decoding reads them: one call reads the batch within its budget
        (a thread per file would cost more than most reads); past it, each file is read
        alone within the limit, so a read that stalls (a share that stops answering) is
        that file's error, not a stalled batch."""
        depth = self.preprocessing.bit_depth
        reads = [partial(read_bytes, path, self.limits.max_bytes, depth) for path in paths]
        try:
            results = call_limited(partial(_each, reads), self.budget.seconds(len(reads)))
        except TimeLimitExceeded:
            return _limited_outcomes(reads, paths, self.threads, self.limits)
        return [_outcome(result, self.limits) for result in results]

    def _run_timed(self, arrays: list[np.ndarray], seconds: float) -> torch.Tensor:
        """``_run`` within ``seconds``; its pace, when it succeeds, sets later budgets."""
        began = time.monotonic()
        images = call_limited(partial(self._run, arrays), seconds)
        self.budget.record(time.monotonic() - began, len(arrays))
        return images

    def _isolate(self, readable: list, batch: DecodedBatch) -> DecodedBatch:
        """After a failed or overlong batch: fresh pipeline, one file at a time."""
        self.pipeline = self._build()
        images = []
        for position, path, data, size in readable:
            array = np.frombuffer(data, dtype=np.uint8)
            try:
                images.append(self._run_timed([array], self.limits.decode_seconds))
            except TimeLimitExceeded:
                batch.errors[position] = _timed_out(self.limits)
                self.pipeline = self._build()  # an abandoned pipeline is not reused
                continue
            except RuntimeError as error:
                self.pipeline = self._build()  # nor is a failed one
                fallback = self._with_pil(path, data, error)
                if isinstance(fallback, str):
                    batch.errors[position] = fallback
                    continue
                images.append(fallback)
            batch.positions.append(position)
            batch.sizes.append(size)
        if images:
            joined = torch.cat(images)
            if joined.is_cuda:  # the copy reads DALI's buffers, released on return
                torch.cuda.current_stream(joined.device).synchronize()
            host = joined.device.type == "cpu"  # GPU decoding's output stays where it is
            batch.images = joined.pin_memory() if self.pin and host else joined
        return batch

    def _with_pil(self, path: Path, data: bytes, error: Exception) -> torch.Tensor | str:
        """What DALI cannot decode, PIL may (a bilevel TIFF without BitsPerSample, for
        one): the PIL decoder's pixels, where DALI's are, so the decoder never decides
        whether an image gets a result; else why neither can read it."""
        read = partial(read_chw, path, self.preprocessing, data)
        try:
            image, _ = call_limited(read, self.limits.decode_seconds)
        except TimeLimitExceeded:
            return _timed_out(self.limits)
        except ImageReadError as pil_error:
            return pil_error.problem
        except Exception:  # PIL failing differently still leaves DALI's reason
            return _dali_reason(error)
        where = (
            torch.device("cpu") if self.device_id is None else torch.device("cuda", self.device_id)
        )
        return torch.from_numpy(image)[None].to(where)

    def close(self) -> None:
        self.pipeline = None


# Preprocessing.interpolation -> DALI resize arguments giving the same result.
DALI_INTERPOLATION: dict[str, dict[str, Any]] = {
    "bilinear-antialias": {"interp_type": "INTERP_LINEAR", "antialias": True}
}


def define_pipeline(
    preprocessing: Preprocessing,
    batch_size: int,
    threads: int,
    device_id: int | None,
) -> Any:
    """The DALI graph: decode (``mixed``, on the GPU, with a device id), resize, to uint8
    C x H x W (uint16 for 12/16-bit models, at full range, reinterpreted as int16 on its
    way to torch). Defining it needs no GPU; building a ``mixed`` one does."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    height, width = preprocessing.input_size
    interpolation = DALI_INTERPOLATION[preprocessing.interpolation]
    wide = preprocessing.bit_depth > 8

    @pipeline_def(
        batch_size=batch_size,
        num_threads=threads,
        device_id=device_id,
        prefetch_queue_depth=1,
        exec_dynamic=True,  # outputs live as long as their holders (zero-copy to torch)
    )
    def pipeline() -> Any:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        decoded = fn.decoders.image(
            encoded,
            device="cpu" if device_id is None else "mixed",
            output_type=types.GRAY if preprocessing.channels == 1 else types.RGB,
            dtype=types.UINT16 if wide else types.UINT8,
        )
        resized = fn.resize(
            decoded,
            resize_x=width,
            resize_y=height,
            interp_type=getattr(types, interpolation["interp_type"]),
            antialias=interpolation["antialias"],
        )
        chw = fn.transpose(resized, perm=[2, 0, 1], output_layout="CHW")
        return fn.reinterpret(chw, dtype=types.INT16) if wide else chw

    return pipeline()


# DALI's wheels, by the CUDA major version each is built for, and the extra installing it.
DALI_BUILDS = {"nvidia-dali-cuda120": ("12", "dali"), "nvidia-dali-cuda130": ("13", "dali-cuda13")}


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def decoder_name(kind: str, preprocessing: Preprocessing, device: torch.device) -> str:
    """Which decoder ``kind`` resolves to here for a model on ``device``: ``auto`` is DALI
    for a GPU (it decodes there) when installed, and PIL for the CPU, where it decodes
    faster than DALI's CPU operators (PNG 1.3x, JPEG 1.7x on a 2-core AVX-512 Xeon:
    benchmarks/results/png-header-avx512/) and exactly as training and eval do; a tiled
    model's images are decoded by PIL (DALI does not tile)."""
    if kind == "null":
        return "null"
    if preprocessing.tile_overlap is not None:
        return "pil"
    if kind == "auto":
        return "dali" if device.type == "cuda" and dali_available() else "pil"
    return kind


def make_decoder(
    kind: str,
    preprocessing: Preprocessing,
    batch_size: int,
    threads: int,
    device: torch.device,
    limits: FileLimits = DEFAULT_LIMITS,
) -> PilDecoder | DaliDecoder | DecoderPool | NullDecoder:
    """The decoder for an engine on ``device``: DALI decodes on that GPU; host tensors are
    pinned for GPU engines. It takes ``concurrent_batches`` batches at once (PIL's calls
    are independent; DALI gets a pipeline each, sharing the threads)."""
    gpu = device.type == "cuda"
    at_once = concurrent_batches(threads, batch_size)
    name = decoder_name(kind, preprocessing, device)
    if name == "null":
        return NullDecoder(preprocessing, batch_size, device)
    if name == "dali":
        if not dali_available():
            raise PsicbatchError(
                "--decoder dali needs NVIDIA DALI: pip install 'psicbatch[dali]' "
                "(or use --decoder pil)"
            )
        device_id = (device.index or 0) if gpu else None
        each = max(1, threads // at_once)
        pipelines = [
            DaliDecoder(preprocessing, batch_size, each, device_id, gpu, limits)
            for _ in range(at_once)
        ]
        return pipelines[0] if at_once == 1 else DecoderPool(pipelines)
    return PilDecoder(preprocessing, threads, gpu, limits, at_once)


def concurrent_batches(threads: int, batch_size: int) -> int:
    """Batches decoded at once: enough for every decoding thread to have a file. One
    batch at a time waits for its slowest file, and a batch of 8 keeps only 8 of 16
    threads busy. The same shape on a 2-core CPU, ``--batch-size 1`` with 2 threads:
    1408x512 PNG with PIL 58-59 images/s one batch at a time, 97-100 two at once; with
    DALI's CPU operators 39-41 and 67-72 (benchmarks/results/decoding-batches-avx512/)."""
    return max(1, min(MAX_DECODING_BATCHES, -(-threads // batch_size)))


class DecoderPool:
    """Decoders that each take one batch at a time (DALI: a pipeline each), for callers
    decoding several batches at once: each call takes an idle one."""

    name = "dali"

    def __init__(self, decoders: list[DaliDecoder]) -> None:
        self.decoders = decoders
        self.at_once = len(decoders)
        self.idle: queue.Queue = queue.Queue()
        for decoder in decoders:
            self.idle.put(decoder)

    def decode(self, paths: list[Path]) -> DecodedBatch:
        decoder = self.idle.get()
        try:
            return decoder.decode(paths)
        finally:
            self.idle.put(decoder)

    def close(self) -> None:
        for decoder in self.decoders:
            decoder.close()


class ArrayDecoder:
    """Images already in memory (uint8 H x W, or H x W x 1/3/4; uint16 H x W grayscale),
    handed in by ``psicbatch.Inspector`` under the names its tasks carry; converted and
    resized by the same rules as decoded files (``preprocess``, ``at_bit_depth``)."""

    name = "array"
    at_once = 1

    def __init__(self, preprocessing: Preprocessing, pin: bool = False) -> None:
        self.preprocessing, self.pin = preprocessing, pin
        self.arrays: dict[str, np.ndarray] = {}

    def decode(self, paths: list[Path]) -> DecodedBatch:
        outcomes: list[Any] = []
        for name in paths:
            array = self.arrays.pop(str(name))
            try:
                pixels = array_pixels(array, self.preprocessing)
            except ValueError as error:
                outcomes.append((str(error), None))
                continue
            outcomes.append((*engine_input(pixels, self.preprocessing), None))
        return _collect(outcomes, self.pin)

    def close(self) -> None:
        self.arrays.clear()


def array_pixels(array: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """An in-memory image as files decode: H x W x C at the model's bit depth."""
    if not isinstance(array, np.ndarray) or array.dtype not in (np.uint8, np.uint16):
        kind = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"not a uint8 or uint16 image array ({kind})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    colours = (3, 4) if array.dtype == np.uint8 else ()
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in colours):
        raise ValueError(
            f"an image array is H x W or H x W x 1 (uint8 also x 3/4), got shape {array.shape}"
        )
    if array.size == 0:  # a file cannot be 0 pixels wide; nothing could resize it
        raise ValueError(f"an empty image array (shape {array.shape})")
    image = Image.fromarray(array)
    try:
        return at_bit_depth(image, preprocessing.channels, preprocessing.bit_depth, Path())
    except ImageReadError as error:
        raise ValueError(error.problem) from None


class NullDecoder:
    """One ready batch of engine-size images, handed out for any paths without reading
    them: ``psicbatch bench`` measures the host side as if the GPU decoded the files."""

    name = "null"
    at_once = 1

    def __init__(self, preprocessing: Preprocessing, batch_size: int, device: torch.device) -> None:
        shape = (batch_size, preprocessing.channels, *preprocessing.input_size)
        self.images: torch.Tensor | None = torch.zeros(shape, device=device)
        height, width = preprocessing.input_size
        self.size = (height, width)

    def decode(self, paths: list[Path]) -> DecodedBatch:
        if self.images is None:
            raise RuntimeError("the null decoder was closed")
        count = len(paths)
        return DecodedBatch(list(range(count)), self.images[:count], [self.size] * count)

    def close(self) -> None:
        self.images = None


def _collect(results: list, pin: bool) -> DecodedBatch:
    """Decoders' per-file outcomes -> one batch: an image (C x H x W) and its size, or
    its tiles (T x C x h x w) and their grid, or (problem, stamp)."""
    batch = DecodedBatch()
    images = []
    for position, result in enumerate(results):
        if isinstance(result[0], str):
            batch.errors[position], stamp = result
        else:
            image, size, stamp = result
            if isinstance(size, TileGrid):
                batch.grids.append(size)
                size = size.size
            batch.positions.append(position)
            images.append(image if image.ndim == 4 else image[None])
            batch.sizes.append(size)
        if stamp is not None:
            batch.stamps[position] = stamp
    if images:
        shape = (sum(len(tiles) for tiles in images), *images[0].shape[1:])
        dtype = torch.from_numpy(images[0][:0]).dtype  # uint8, or uint16 above 8 bits
        batch.images = torch.empty(shape, dtype=dtype, pin_memory=pin)
        row = 0
        for image in images:
            batch.images[row : row + len(image)] = torch.from_numpy(image)
            row += len(image)
    return batch


def _diagnose(path: Path, data: bytes) -> str:
    """Why a file whose header PIL cannot identify is unreadable: PIL's diagnosis."""
    try:
        read_image(path, 1, data)
    except ImageReadError as pil_error:
        return pil_error.problem
    except Exception:  # PIL failing differently: unreadable all the same
        pass
    return UNREADABLE


def _dali_reason(error: Exception) -> str:
    """DALI's own message, shortened to its reason."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "failure" in line.lower() or "error" in line.lower()]
    reason = (useful[-1] if useful else "decoder error").rstrip(".")
    return f"DALI could not decode it ({reason})"
