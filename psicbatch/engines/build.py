"""``psicbatch build-engine``: checkpoint -> engine folder (engine file + manifest.json).

Every backend goes through the same steps: resolve and validate options, build into a
staging folder, load the result through the common engine interface, measure parity
against the fp32 checkpoint, and only then move the folder into place.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from psicbatch import __version__, hardware
from psicbatch.checkpoint import Checkpoint, load_checkpoint
from psicbatch.devices import resolve_device
from psicbatch.engines.build_options import BuildOptions
from psicbatch.engines.destination import check_destination, move_into_place
from psicbatch.engines.export import export_onnx
from psicbatch.engines.half_precision import float16_outside_qdq
from psicbatch.engines.image_sets import ImageSets, image_sets
from psicbatch.engines.loading import load_engine
from psicbatch.engines.manifest import MANIFEST_NAME, Manifest
from psicbatch.engines.parity import measure_parity, parity_problem
from psicbatch.engines.quantize import quantize_int8
from psicbatch.engines.registry import (
    BACKENDS,
    CPU_INT8_BACKENDS,
    SUPPORTED,
    backend,
    installed_cpu_int8,
)
from psicbatch.engines.tuning import (
    TIMING_BATCH,
    Candidate,
    cpu_candidates,
    time_engine,
    tune,
)
from psicbatch.engines.tuning import summary as tuning_summary
from psicbatch.errors import PsicbatchError
from psicbatch.fingerprints import chosen_on
from psicbatch.network_size import STRIDE
from psicbatch.output_lock import OutputLock
from psicbatch.paths import file_sha256
from psicbatch.precision import choose_precision, cpu_auto, resolve_precision
from psicbatch.versions import installed_versions


@dataclass(frozen=True)
class Choice:
    """What to build and why; ``fallback`` is built instead if this one fails parity."""

    backend: str
    precision: str
    reason: str
    fallback: Choice | None = None


class ParityError(PsicbatchError):
    def __init__(self, problem: str) -> None:
        super().__init__(
            f"parity check failed: {problem}; the engine was not written "
            "(--no-parity-check keeps it anyway)"
        )
        self.problem = problem


def _silent(step: str) -> None:
    """The default listener of a build's steps."""


def tensorrt_usable(device: str) -> bool:
    """TensorRT's bindings import and ``device`` is a GPU."""
    return device.startswith("cuda") and BACKENDS["tensorrt"].problem() is None


def cpu_int8_backend() -> str | None:
    """The fastest CPU int8 runtime installed here (benchmarks/results/cpu-int8/), if any."""
    return next(iter(installed_cpu_int8()), None)


def choose_engine(options: BuildOptions) -> Choice:
    """The backend and precision to build.

    ``auto`` is TensorRT with a GPU. On CPUs, ``build_engine`` times the candidates
    (``tuning``); this rule of thumb serves ``--no-tune``: int8 (2.3-3x torch bf16 at the
    paper's sizes on AVX-512 VNNI, benchmarks/results/cpu-int8/; 0.70-0.99x torch fp32
    without int8 dot products, cpu-int8-avx2-epyc/) when calibration images are given,
    the CPU has int8 dot products and the int8 engine keeps parity with fp32; otherwise
    torch in the precision ``auto`` gives on this CPU (``cpu_auto``: bf16 where native and
    faster, 2.5x ONNX Runtime fp32 on an AVX-512 BF16 CPU, benchmarks/results/cpu-backends/;
    else fp32).
    """
    device = resolve_device(options.device)
    if options.backend != "auto":
        if options.backend == "tensorrt":
            from psicbatch.engines.tensorrt_engine import import_tensorrt

            import_tensorrt()
            if device == "cpu":
                raise PsicbatchError("--backend tensorrt builds on a GPU; --device is cpu")
        precision = build_precision(options.backend, options.precision, options.calib, device)
        return Choice(options.backend, precision, "as requested")
    if tensorrt_usable(device):
        precision = build_precision("tensorrt", options.precision, options.calib, device)
        return Choice("tensorrt", precision, f"TensorRT is installed and {device} is a GPU")
    int8 = cpu_int8_backend()
    install_int8 = backend(CPU_INT8_BACKENDS[0]).install_hint  # the fastest one
    if options.precision == "int8":
        if int8 is None:
            raise PsicbatchError(f"--precision int8 needs a CPU int8 runtime: {install_int8}")
        return Choice(int8, build_precision(int8, "int8", options.calib, device), "as requested")
    if options.precision != "auto" or device != "cpu":
        precision = resolve_precision(options.precision, "torch", device)
        return Choice("torch", precision, "no TensorRT here")
    floating = cpu_auto()
    if options.calib is None:
        return Choice(
            "torch",
            floating.precision,
            f"int8 needs calibration images (--calib DIR); {floating.reason}",
        )
    if int8 is None:
        return Choice(
            "torch",
            floating.precision,
            f"no CPU int8 runtime installed ({install_int8}); {floating.reason}",
        )
    if not hardware.cpu_precisions().int8_dot:
        return Choice(
            "torch",
            floating.precision,
            f"this CPU has no int8 dot products, where int8 engines ran slower than torch "
            f"fp32; {floating.reason}",
        )
    fallback = Choice("torch", floating.precision, floating.reason)
    return Choice(int8, "int8", "calibration images given, and parity with fp32 held", fallback)


def build_precision(backend: str, precision: str, calib: Path | None, device: str) -> str:
    """The precision to build for ``device`` (the CPU for CPU-only backends); int8 needs
    images, so ``auto`` without them is the backend's first float."""
    if torch.device(device).type not in SUPPORTED[backend]:
        device = "cpu"
    requested = precision
    precision = resolve_precision(precision, backend, device)
    if precision == "int8" and calib is None and requested == "auto":
        supported = SUPPORTED[backend][torch.device(device).type]
        precision = next(p for p in supported if p != "int8")
    if precision == "int8" and calib is None:
        raise PsicbatchError(
            "--precision int8 needs --calib DIR: a folder of representative images to "
            "calibrate the quantization ranges"
        )
    return precision


def engine_size(checkpoint: Checkpoint, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The engine's preferred input size, rounded up to a multiple of 8."""
    height, width = requested or checkpoint.preprocessing.input_size
    return (-(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE)


def size_range(size: tuple[int, int], dynamic: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Dynamic engines accept 8x8 up to twice the preferred size; fixed ones exactly it."""
    if not dynamic:
        return size, size
    return (STRIDE, STRIDE), (2 * size[0], 2 * size[1])


def default_directory(checkpoint_path: Path, backend: str, precision: str, size: tuple) -> Path:
    return Path("engines") / f"{checkpoint_path.stem}-{backend}-{precision}-{size[0]}x{size[1]}"


def build_engine(
    checkpoint_path: Path, options: BuildOptions, say: Callable[[str], None] = _silent
) -> tuple[Path, Manifest]:
    """Build the chosen engine; an automatic int8 choice that fails parity builds its
    fallback instead, and the manifest says why. ``say`` hears each step as it starts
    (a build of the paper's network takes minutes on a CPU)."""
    checkpoint = load_checkpoint(checkpoint_path)
    choice = choose_engine(options)
    size = engine_size(checkpoint, options.input_size)
    measured = options.backend == options.precision == "auto" and options.tune
    tuned = measured and resolve_device(options.device) == "cpu"
    # Every folder the build may end in, checked before any work.
    ends = [(choice.backend, choice.precision)]
    if choice.fallback is not None:
        ends.append((choice.fallback.backend, choice.fallback.precision))
    if tuned:
        ends += [(c.backend, c.precision) for c in cpu_candidates(options.calib is not None)]
    directories = sorted(
        {options.out or default_directory(checkpoint_path, *end, size) for end in ends}
    )
    for directory in directories:
        check_destination(directory, options.overwrite)
    with contextlib.ExitStack() as locks:  # a second build there would remove our staging
        for directory in directories:
            locks.enter_context(OutputLock(directory, "build-engine"))
        say("reading the calibration and parity images")
        images = image_sets(
            checkpoint, size, options.calib, options.parity_images, options.parity_count
        )
        build = Build(checkpoint_path, checkpoint, options, size, images, say)
        return _built(build, choice, tuned)


def _built(build: Build, choice: Choice, tuned: bool) -> tuple[Path, Manifest]:
    """The chosen engine built, measured among the CPU candidates where ``tuned``, or its
    fallback where an automatic int8 choice fails parity."""
    options = build.options
    if tuned:
        return tuned_build(build)
    if choice.fallback is None:
        return build.checked(choice, options.check_parity)
    try:
        return build.checked(choice, enforce_parity=True)
    except ParityError as error:
        fallback = choice.fallback
        reason = f"the int8 engine failed its parity check ({error.problem}); {fallback.reason}"
        return build.checked(replace(fallback, reason=reason), options.check_parity)


@dataclass
class Build:
    """One checkpoint's build inputs, shared by a choice and its fallback."""

    checkpoint_path: Path
    checkpoint: Checkpoint
    options: BuildOptions
    size: tuple[int, int]
    images: ImageSets
    say: Callable[[str], None] = _silent

    def checked(
        self, choice: Choice, enforce_parity: bool, directory: Path | None = None
    ) -> tuple[Path, Manifest]:
        """Build into a staging folder, measure parity, and only then move it into place
        (``directory``, default: --out or the default folder)."""
        options = self.options
        directory = directory or self.directory(choice.backend, choice.precision)
        manifest = draft_manifest(
            self.checkpoint_path,
            self.checkpoint,
            choice.backend,
            choice.precision,
            self.size,
            options.dynamic_size,
            options.max_batch,
        )
        manifest.selection = choice.reason
        staging = directory.with_name(f".{directory.name}.building")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            result = _build_backend(
                self.checkpoint_path,
                self.checkpoint,
                manifest,
                options,
                staging,
                self.images,
                lambda step: self.say(f"{choice.backend} {choice.precision}: {step}"),
            )
            manifest.engine_file = result["engine_file"]
            manifest.backend_details = result["details"]
            manifest.engine_sha256 = file_sha256(staging / manifest.engine_file)
            manifest.data_files = data_file_digests(staging, manifest.engine_file)
            manifest.write(staging)
            device = resolve_device(options.device)
            quantized = choice.precision == "int8"
            engine = load_engine(staging, device)
            self.say(
                f"{choice.backend} {choice.precision}: checking parity with fp32 on "
                f"{len(self.images.parity)} images"
            )
            manifest.parity = measure_parity(engine, self.checkpoint, self.images.parity)
            manifest.parity.update(
                device=device,
                source=self.images.parity_source,
                calibration_images=self.images.calibration_count if quantized else 0,
            )
            manifest.write(staging)
            problem = parity_problem(manifest.parity, options.min_mask_iou)
            if problem and enforce_parity:
                raise ParityError(problem)
            move_into_place(staging, directory, options.overwrite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return directory, manifest

    def directory(self, backend: str, precision: str) -> Path:
        return self.options.out or default_directory(
            self.checkpoint_path, backend, precision, self.size
        )


def tuned_build(build: Build) -> tuple[Path, Manifest]:
    """Build every CPU candidate beside the final folder, time those that keep parity,
    and keep the fastest; the manifest records the whole table."""
    options = build.options
    final_parent = build.directory("torch", "fp32").parent
    final_parent.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=".psicbatch-tuning-", dir=final_parent))

    def build_candidate(candidate: Candidate) -> tuple[Path, Manifest]:
        choice = Choice(candidate.backend, candidate.precision, "measured")
        folder = workspace / f"{candidate.backend}-{candidate.precision}"
        return build.checked(choice, enforce_parity=True, directory=folder)

    def measure(built: tuple[Path, Manifest], seconds: float) -> float:
        folder, manifest = built
        build.say(f"{manifest.backend} {manifest.precision}: timing for up to {seconds:.0f} s")
        batch = min(TIMING_BATCH, manifest.max_batch)
        return time_engine(load_engine(folder, "cpu"), batch, manifest.input_size, seconds)

    try:
        candidates = cpu_candidates(options.calib is not None)
        # Two steps: unpacked at once, mypy infers tune's type variable as Optional.
        outcome = tune(candidates, build_candidate, measure, options.tune_seconds)
        trials, best = outcome
        if best is None:
            choice = choose_engine(replace(options, tune=False))
            reason = f"{choice.reason} (no candidate was timed: {trials[0].outcome})"
            return build.checked(replace(choice, reason=reason), options.check_parity)
        folder, manifest = best
        chosen = next(
            t for t in trials if (t.backend, t.precision) == (manifest.backend, manifest.precision)
        )
        manifest.selection = tuning_summary(trials, chosen)
        manifest.tuning = [trial.to_dict() for trial in trials]
        manifest.write(folder)
        directory = build.directory(manifest.backend, manifest.precision)
        move_into_place(folder, directory, options.overwrite)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return directory, manifest


def data_file_digests(folder: Path, engine_file: str) -> dict[str, str]:
    """sha256 of every file in a built engine folder besides the engine file (external
    weights, OpenVINO's .bin): the manifest covers everything the runtime reads."""
    return {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME and path.name != engine_file
    }


def draft_manifest(
    checkpoint_path: Path,
    checkpoint: Checkpoint,
    backend: str,
    precision: str,
    size: tuple[int, int],
    dynamic_size: bool,
    max_batch: int,
) -> Manifest:
    """Everything the manifest says before the engine file exists."""
    min_size, max_size = size_range(size, dynamic_size)
    return Manifest(
        backend=backend,
        precision=precision,
        engine_file="",
        engine_sha256="",
        channels=checkpoint.model_config.in_channels,
        input_size=size,
        min_size=min_size,
        max_size=max_size,
        min_batch=1,
        max_batch=max_batch,
        checkpoint_sha256=file_sha256(checkpoint_path),
        preprocessing=checkpoint.preprocessing.to_dict(),
        thresholds=asdict(checkpoint.thresholds),
        versions=_library_versions(backend),
        model=checkpoint.model_config.to_dict(),
        training_images=str(checkpoint.training.get("image_digests", "")),
        chosen_on=chosen_on(checkpoint.training),
    )


def checkpoint_manifest(
    checkpoint_path: Path,
    precision: str = "auto",
    device: str = "cpu",
    max_batch: int = 64,
    input_size: tuple[int, int] | None = None,
) -> Manifest:
    """The manifest of a torch engine that runs a checkpoint file in place on ``device``
    (``auto`` precision: fp16 on a GPU; on the CPU ``precision.cpu_auto``'s choice)."""
    checkpoint = load_checkpoint(checkpoint_path, weights=False)
    choice = choose_precision(precision, "torch", device)
    precision = choice.precision
    size = engine_size(checkpoint, input_size)
    manifest = draft_manifest(
        checkpoint_path, checkpoint, "torch", precision, size, True, max_batch
    )
    manifest.engine_file = str(checkpoint_path.resolve())
    manifest.engine_sha256 = manifest.checkpoint_sha256
    manifest.backend_details = {"compile": False}
    manifest.selection = choice.reason
    return manifest


def _build_backend(
    checkpoint_path: Path,
    checkpoint: Checkpoint,
    manifest: Manifest,
    options: BuildOptions,
    staging: Path,
    images: ImageSets,
    say: Callable[[str], None],
) -> dict[str, Any]:
    entry = backend(manifest.backend)
    if not entry.from_onnx:
        say("building")
        return entry.load(entry.builder)(checkpoint_path, staging, options.compile)
    size = manifest.input_size
    work = staging / "work"
    work.mkdir()
    try:
        calibrating = f"calibrating int8 ranges on {images.calibration_count} images"
        say("exporting the ONNX graph")
        if entry.cpu_int8:
            graph = export_onnx(
                checkpoint,
                work / "fp32.onnx",
                size,
                options.dynamic_size,
                checkpoint_sha256=manifest.checkpoint_sha256,
            )
            if manifest.precision == "int8":
                say(calibrating)
                graph = quantize_int8(graph, work / "int8.onnx", images.calibration, "u8")
            say("building")
            return entry.load(entry.builder)(graph, staging, options.threads)
        import tensorrt

        from psicbatch.engines.tensorrt_engine import (
            build_tensorrt,
            precision_plan,
            tensorrt_major,
        )

        plan = precision_plan(tensorrt_major(tensorrt.__version__), manifest.precision)
        dtype = getattr(torch, plan.graph_dtype)
        graph = export_onnx(
            checkpoint,
            work / "model.onnx",
            size,
            options.dynamic_size,
            dtype,
            checkpoint_sha256=manifest.checkpoint_sha256,
        )
        if plan.quantize:
            say(calibrating)
            graph = quantize_int8(graph, work / "int8.onnx", images.calibration, "s8")
        if plan.qdq_float16:
            graph = float16_outside_qdq(graph, work / "int8-fp16.onnx")
        say("building (TensorRT times its kernels: minutes)")
        with torch.cuda.device(torch.device(resolve_device(options.device))):
            return build_tensorrt(
                graph,
                staging,
                manifest,
                plan,
                options.workspace_gb,
                options.cache_dir or staging.parent / ".timing-cache",  # beside the engine
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _library_versions(name: str) -> dict[str, str]:
    return {"psicbatch": __version__, **installed_versions(backend(name).packages)}
