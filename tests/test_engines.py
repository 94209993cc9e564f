from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.engines.build import BuildOptions, build_engine
from psicbatch.engines.cuda_graphs import Forward, GraphedForward
from psicbatch.engines.destination import move_into_place
from psicbatch.engines.export import ProbabilityModel
from psicbatch.engines.frequency_conv import large_kernel_method
from psicbatch.engines.loading import load_engine
from psicbatch.engines.manifest import MANIFEST_NAME
from psicbatch.errors import PsicbatchError
from psicbatch.metrics import mask_iou

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
# backend, precision, max |probability difference| allowed against torch fp32
CPU_BUILDS = [
    ("torch", "fp32", 1e-5),
    ("torch", "bf16", 0.05),
    ("onnxruntime", "fp32", 1e-4),
    ("onnxruntime", "int8", 0.1),
    ("openvino", "int8", 0.1),
    ("openvino", "fp32", 1e-4),
]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calib")
    generate(root, 32, (128, 128), defect_rate=0.5, seed=11)
    return root


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, calibration: Path) -> dict:
    root = tmp_path_factory.mktemp("engines")
    built = {}
    for backend, precision, _ in CPU_BUILDS:
        options = BuildOptions(
            backend=backend,
            precision=precision,
            max_batch=4,
            calib=calibration if precision == "int8" else None,
            out=root / f"{backend}-{precision}",
        )
        built[backend, precision] = build_engine(demo_model_path(), options)
    return built


def reference(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = ProbabilityModel(load_checkpoint(demo_model_path()).build_model())
    with torch.no_grad():
        probabilities, segmentation = model(torch.from_numpy(images))
    return probabilities.numpy(), segmentation[:, 0].numpy()


@pytest.mark.parametrize(("backend", "precision", "tolerance"), CPU_BUILDS)
@pytest.mark.parametrize("size", [(128, 128), (64, 96)])
@pytest.mark.parametrize("batch", [1, 4])
def test_engine_matches_fp32_torch(engines, backend, precision, tolerance, size, batch) -> None:
    directory, manifest = engines[backend, precision]
    engine = load_engine(directory)
    images = np.random.default_rng(batch).normal(size=(batch, 1, *size)).astype(np.float32)
    probabilities, segmentation = (t.numpy() for t in engine.infer(torch.from_numpy(images)))
    expected_p, expected_s = reference(images)
    assert probabilities.shape == (batch,) and segmentation.shape == (batch, *size)
    assert np.abs(probabilities - expected_p).max() <= tolerance
    threshold = manifest.thresholds["segmentation"]
    for actual, expected in zip(segmentation, expected_s, strict=True):
        assert mask_iou(actual >= threshold, expected >= threshold) >= 0.7


@pytest.mark.parametrize(("backend", "precision", "tolerance"), CPU_BUILDS)
def test_manifest_records_parity_and_provenance(engines, backend, precision, tolerance) -> None:
    directory, manifest = engines[backend, precision]
    written = json.loads((directory / MANIFEST_NAME).read_text())
    assert written["backend"] == backend and written["precision"] == precision
    assert written["parity"]["decision_flips"] == 0
    assert written["parity"]["mask_iou_mean"] >= 0.9
    assert len(written["checkpoint_sha256"]) == 64
    assert written["input_size"] == [128, 128] and written["max_batch"] == 4
    assert written["versions"]["torch"] == importlib.metadata.version("torch")
    assert [o["name"] for o in written["outputs"]] == ["defect_probability", "segmentation"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [MANIFEST_NAME, manifest.engine_file]
    )
    info = CliRunner().invoke(main, ["info", str(directory), "--json"])
    assert info.exit_code == 0, info.output
    shown = json.loads(info.output)
    assert (shown["backend"], shown["precision"], shown["batch"]) == (backend, precision, "1..4")
    assert shown["width"] == 0.125 and shown["gflop_per_image"] == 0.35
    assert (
        shown["parity"]["decision_flips"] == 0 and shown["engine_sha256"] == manifest.engine_sha256
    )
    if backend == "torch":  # how conv10 would run here: it depends on the CPU
        here = large_kernel_method(torch.device("cpu"), precision)
        assert shown["large_kernels"] == f"{here} on this machine's CPU, direct on GPUs"
    else:
        assert "large_kernels" not in shown


def test_onnx_file_loads_in_a_fresh_session_with_dynamic_shapes(engines) -> None:
    import onnxruntime as ort

    directory, manifest = engines["onnxruntime", "fp32"]
    session = ort.InferenceSession(str(directory / manifest.engine_file))
    (model_input,) = session.get_inputs()
    assert model_input.name == "image"
    assert isinstance(model_input.shape[0], str)  # symbolic batch
    assert all(isinstance(dim, str) for dim in model_input.shape[2:])  # symbolic size
    for shape in [(1, 1, 128, 128), (3, 1, 40, 256)]:
        probabilities, segmentation = session.run(None, {"image": np.zeros(shape, np.float32)})
        assert probabilities.shape == (shape[0],) and segmentation.shape == (
            shape[0],
            1,
            *shape[2:],
        )


def test_cpu_runtimes_take_the_threads_psicbatch_gives_torch(engines) -> None:
    """ONNX Runtime's and OpenVINO's own defaults (a thread per physical core) know
    neither a container's CPU quota nor a run's workers sharing the CPUs: an engine
    built with --threads 0 runs as many as torch does where it is opened."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as a worker sharing the CPUs, or a quota, sets it
        ort = load_engine(engines["onnxruntime", "fp32"][0], "cpu")
        assert ort.session.get_session_options().intra_op_num_threads == 1
        openvino = load_engine(engines["openvino", "int8"][0], "cpu")
        compiled = openvino.request.get_compiled_model()
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    finally:
        torch.set_num_threads(before)


def compiled_engine_parity(out: Path, precision: str, device: str) -> dict:
    """Build the demo model as a compiled torch engine (torch.compile at one fixed size,
    warmed at open) on ``device``; its parity against fp32, as the build checked it."""
    options = BuildOptions(
        backend="torch",
        precision=precision,
        max_batch=2,
        compile=True,
        dynamic_size=False,
        out=out,
        device=device,
    )
    _, manifest = build_engine(demo_model_path(), options)
    assert manifest.backend_details["compile"] is True
    assert manifest.parity["device"].startswith(device.split(":")[0])
    return manifest.parity


@pytest.mark.slow
def test_a_compiled_torch_engine_keeps_parity_on_the_cpu(tmp_path: Path) -> None:
    """torch.compile (about 30 s of compiling on 2 cores, hence slow)."""
    parity = compiled_engine_parity(tmp_path / "c", "fp32", "cpu")
    assert parity["decision_flips"] == 0 and parity["mask_iou_min"] >= 0.99


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_bound_tensors_give_what_a_plain_session_gives(engines, precision: str) -> None:
    """The engine binds torch tensors as ONNX Runtime's inputs and outputs (no numpy
    copies; on the CUDA provider no host round trip): the same numbers as session.run,
    for a non-contiguous batch too."""
    directory, _ = engines["onnxruntime", precision]
    engine = load_engine(directory)
    wide = torch.randn(3, 1, 128, 256)
    batch = wide[:, :, :, ::2]  # a strided view
    probabilities, segmentation = engine.infer(batch)
    plain = engine.session.run(None, {"image": batch.contiguous().numpy()})
    assert np.array_equal(probabilities.numpy(), plain[0])
    assert np.array_equal(segmentation.numpy(), plain[1][:, 0])


def test_size_and_batch_outside_range_are_refused_before_inference(engines) -> None:
    engine = load_engine(engines["torch", "fp32"][0])
    with pytest.raises(PsicbatchError, match=r"input size 300x128 is outside .* 8x8 \.\. 256x256"):
        engine.infer(torch.zeros((1, 1, 300, 128)))
    with pytest.raises(PsicbatchError, match=r"input size 100x128 .*multiples of 8"):
        engine.infer(torch.zeros((1, 1, 100, 128)))
    with pytest.raises(PsicbatchError, match=r"batch of 5 is outside .* range 1\.\.4"):
        engine.infer(torch.zeros((5, 1, 128, 128)))
    with pytest.raises(PsicbatchError, match=r"takes N x 1 x H x W input"):
        engine.infer(torch.zeros((1, 3, 128, 128)))
    with pytest.raises(PsicbatchError, match=r"takes normalised float input, got torch.uint8"):
        engine.infer(torch.zeros((1, 1, 128, 128), dtype=torch.uint8))  # raw decoded pixels


def test_fixed_size_engine_accepts_only_its_size(tmp_path: Path) -> None:
    options = BuildOptions(
        backend="torch",
        precision="fp32",
        input_size=(60, 60),
        dynamic_size=False,
        max_batch=2,
        out=tmp_path / "fixed",
    )
    directory, manifest = build_engine(demo_model_path(), options)
    assert manifest.input_size == manifest.min_size == manifest.max_size == (64, 64)
    engine = load_engine(directory)
    assert engine.infer(torch.zeros((2, 1, 64, 64)))[1].shape == (2, 64, 64)
    with pytest.raises(PsicbatchError, match=r"64x64 \.\. 64x64"):
        engine.infer(torch.zeros((1, 1, 128, 128)))


def test_tampered_engine_file_is_refused(engines, tmp_path: Path) -> None:
    import shutil

    directory = tmp_path / "copy"
    shutil.copytree(engines["torch", "fp32"][0], directory)
    with open(directory / "model.pt", "ab") as stream:
        stream.write(b"\0")
    with pytest.raises(PsicbatchError, match="does not match its manifest"):
        load_engine(directory)


def test_other_manifest_schema_is_refused(engines, tmp_path: Path) -> None:
    import shutil

    directory = tmp_path / "copy"
    shutil.copytree(engines["torch", "fp32"][0], directory)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["schema_version"] = 99
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(PsicbatchError, match=r"schema 99.*rebuild"):
        load_engine(directory)


def test_parity_failure_refuses_the_build(tmp_path: Path) -> None:
    options = BuildOptions(
        backend="torch", precision="bf16", min_mask_iou=1.01, out=tmp_path / "strict"
    )
    with pytest.raises(PsicbatchError, match=r"parity check failed.*--no-parity-check"):
        build_engine(demo_model_path(), options)
    assert not (tmp_path / "strict").exists()
    assert not any(p.name.endswith(".building") for p in tmp_path.iterdir())
    kept = BuildOptions(**{**options.__dict__, "check_parity": False})
    directory, manifest = build_engine(demo_model_path(), kept)
    assert directory.exists() and manifest.parity["mask_iou_mean"] < 1.01


def test_option_validation(tmp_path: Path) -> None:
    with pytest.raises(PsicbatchError, match="int8 needs --calib DIR"):
        build_engine(demo_model_path(), BuildOptions(backend="onnxruntime", precision="int8"))
    with pytest.raises(PsicbatchError, match="bf16 is not available with the onnxruntime backend"):
        build_engine(demo_model_path(), BuildOptions(backend="onnxruntime", precision="bf16"))
    with pytest.raises(PsicbatchError, match="unknown --precision 'fp8'; choose one of auto, fp32"):
        build_engine(demo_model_path(), BuildOptions(precision="fp8"))
    with pytest.raises(PsicbatchError, match="max-batch and --parity-count must be at least 1"):
        build_engine(demo_model_path(), BuildOptions(max_batch=0))
    with pytest.raises(PsicbatchError, match="unknown --backend 'tflite'"):
        BuildOptions(backend="tflite")
    with pytest.raises(PsicbatchError, match="--tune-seconds must be positive and finite"):
        BuildOptions(tune_seconds=float("inf"))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_clear_line() -> None:
    result = CliRunner().invoke(
        main, ["build-engine", str(demo_model_path()), "--backend", "tensorrt"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: TensorRT is not installed (pip install 'psicbatch[tensorrt]'); use --backend auto "
        "(fastest available here) or --backend onnxruntime"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto builds TensorRT on GPUs")
def test_build_engine_times_the_candidates_and_lists_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psicbatch.engines import build
    from psicbatch.engines.tuning import Candidate

    two = [Candidate("onnxruntime", "fp32"), Candidate("torch", "fp32")]  # keeps it short
    monkeypatch.setattr(build, "cpu_candidates", lambda calibrated: two)
    out = tmp_path / "engines" / "demo"
    result = CliRunner().invoke(
        main, ["build-engine", str(demo_model_path()), "-o", str(out), "--max-batch", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "0 decision flips" in result.output and "batch 1..2" in result.output
    manifest = load_engine(out, "cpu").manifest
    timed = {(t["backend"], t["precision"]): t["seconds_per_image"] for t in manifest.tuning}
    assert set(timed) == {("onnxruntime", "fp32"), ("torch", "fp32")} and all(timed.values())
    assert (manifest.backend, manifest.precision) == min(timed, key=timed.get)
    assert manifest.selection.startswith("measured on this machine (CPU capability")
    assert "ms/image  timed" in result.output
    for step in (  # a long build says what it is doing
        "] reading the calibration and parity images",
        "] onnxruntime fp32: exporting the ONNX graph",
        "] torch fp32: checking parity with fp32 on",
        "] onnxruntime fp32: timing for up to",
    ):
        assert step in result.output, step
    assert not list((tmp_path / "engines").glob(".psicbatch-tuning-*"))  # cleaned up
    listing = CliRunner().invoke(main, ["engines", str(tmp_path / "engines")])
    assert listing.exit_code == 0 and "demo" in listing.output
    assert manifest.backend in listing.output


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_parity_is_measured_on_images_held_out_of_calibration(engines, backend) -> None:
    parity = engines[backend, "int8"][1].parity
    assert parity["source"].startswith("held out of --calib")
    assert (parity["images"], parity["calibration_images"]) == (8, 24)  # every 4th of 32
    assert parity["images_judged_defective"] >= 3  # defects, not noise
    assert parity["mask_iou_mean_judged_defective"] >= 0.9
    assert parity["decision_flips"] == 0


def evaluate_cli(*args: str) -> dict:
    result = CliRunner().invoke(main, ["eval", *args, "-q"])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("-o") + 1])
    return json.loads((out / "metrics.json").read_text())


def test_eval_of_an_onnxruntime_engine_equals_eval_of_its_checkpoint(
    engines, calibration: Path, tmp_path: Path
) -> None:
    directory = engines["onnxruntime", "fp32"][0]
    engine = evaluate_cli("--engine", str(directory), str(calibration), "-o", str(tmp_path / "e"))
    model = evaluate_cli(
        str(demo_model_path()), str(calibration), "--precision", "fp32", "-o", str(tmp_path / "m")
    )
    assert engine["engine"]["backend"] == "onnxruntime" and model["engine"]["backend"] == "torch"
    assert engine["engine"]["engine_sha256"] == engines["onnxruntime", "fp32"][1].engine_sha256
    for group in ("segmentation", "classification"):
        for name, value in model[group].items():
            assert engine[group][name] == pytest.approx(value, abs=1e-3), name


def test_int8_engine_report_shows_the_deltas(engines, calibration: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    summary = evaluate_cli(
        "--engine",
        str(engines["onnxruntime", "int8"][0]),
        str(calibration),
        "--compare-to",
        str(demo_model_path()),
        "-o",
        str(out),
    )
    comparison = summary["comparison"]
    assert comparison["reference_engine"]["precision"] == "fp32"
    ap = comparison["metrics"]["ap"]
    assert ap["delta"] == pytest.approx(ap["engine"] - ap["reference"])
    report = (out / "report.md").read_text()
    assert "onnxruntime int8" in report and "delta (points)" in report
    assert "| two-class mIoU |" in report  # a row of the comparison


def test_eval_needs_a_model_or_an_engine(calibration: Path) -> None:
    result = CliRunner().invoke(main, ["eval", str(calibration)])
    assert (
        result.exit_code == 2
        and "give CHECKPOINT DATA, --engine DIR DATA, or RESULTS --labels DATA" in result.output
    )


def test_run_with_an_engine_folder_and_a_threshold(
    engines, calibration: Path, tmp_path: Path
) -> None:
    from psicbatch.run.output import read_metadata

    out = tmp_path / "results.parquet"
    directory = engines["onnxruntime", "fp32"][0]
    args = ["run", str(calibration / "images"), "--engine", str(directory), "--threshold", "0.3"]
    result = CliRunner().invoke(main, [*args, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 32 and all(r["is_defect"] == (r["probability"] >= 0.3) for r in rows)
    assert any(r["is_defect"] for r in rows) and not all(r["is_defect"] for r in rows)
    metadata = read_metadata(out)
    assert metadata["thresholds"]["classification"] == 0.3
    assert metadata["engine"]["backend"] == "onnxruntime"
    assert metadata["engine"]["engine_sha256"] == engines["onnxruntime", "fp32"][1].engine_sha256


def _copy_with_manifest(engines: dict, key: tuple, tmp_path: Path, **changes: object) -> Path:
    import shutil

    directory = tmp_path / "copy"
    shutil.copytree(engines[key][0], directory)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest.update(changes)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return directory


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "a JSON object is expected"),
        ({"thresholds": {"classification": float("nan"), "segmentation": 0.5}}, "thresholds"),
        ({"thresholds": {"classification": 2.0, "segmentation": 0.5}}, "thresholds"),
        ({"input_size": "big"}, "input_size"),
        ({"max_batch": 0}, "max_batch"),
        ({"channels": 2}, "channels"),
        ({"data_files": ["x"]}, "data_files"),
    ],
)
def test_malformed_manifests_are_one_line_errors(
    engines, tmp_path: Path, content: object, message: str
) -> None:
    directory = _copy_with_manifest(engines, ("torch", "fp32"), tmp_path)
    if isinstance(content, str):
        (directory / MANIFEST_NAME).write_text(content)
    else:
        directory = _copy_with_manifest(engines, ("torch", "fp32"), tmp_path / "2", **content)
    with pytest.raises(PsicbatchError, match="malformed manifest") as raised:
        load_engine(directory, "cpu")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(
        main, ["run", str(demo_model_path()), "--engine", str(directory), "--out", str(out)]
    )
    assert result.exit_code == 1 and "malformed manifest" in result.output


def test_a_corrupt_onnx_file_with_a_matching_digest_is_a_one_line_error(
    engines, tmp_path: Path
) -> None:
    from psicbatch.paths import file_sha256

    directory = _copy_with_manifest(engines, ("onnxruntime", "fp32"), tmp_path)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    engine_file = directory / manifest["engine_file"]
    engine_file.write_bytes(engine_file.read_bytes()[:5000])  # cut short
    manifest["engine_sha256"] = file_sha256(engine_file)  # as if built that way
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(PsicbatchError, match=r"not a readable ONNX graph|cannot load it") as raised:
        load_engine(directory, "cpu")
    assert "\n" not in str(raised.value)


def test_onnx_external_data_is_covered_by_the_manifest(engines, tmp_path: Path) -> None:
    import onnx

    from psicbatch.engines.build import data_file_digests
    from psicbatch.paths import file_sha256

    directory = _copy_with_manifest(engines, ("onnxruntime", "fp32"), tmp_path)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    engine_file = directory / manifest["engine_file"]
    graph = onnx.load(str(engine_file))
    onnx.save(graph, str(engine_file), save_as_external_data=True, location="weights.bin")
    manifest["engine_sha256"] = file_sha256(engine_file)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(PsicbatchError, match="not covered by the manifest"):
        load_engine(directory, "cpu")  # weights outside the digests are refused
    manifest["data_files"] = data_file_digests(directory, manifest["engine_file"])
    assert set(manifest["data_files"]) == {"weights.bin"}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    images = torch.rand(1, 1, 128, 128)
    before = load_engine(directory, "cpu").infer(images)[0]
    torch.testing.assert_close(
        before, load_engine(engines["onnxruntime", "fp32"][0]).infer(images)[0]
    )
    weights = bytearray((directory / "weights.bin").read_bytes())
    weights[100:104] = b"\x00\x00\x80\x7f"  # one weight edited
    (directory / "weights.bin").write_bytes(bytes(weights))
    with pytest.raises(PsicbatchError, match=r"weights\.bin: does not match its manifest"):
        load_engine(directory, "cpu")


def test_built_engines_record_every_file_they_read(engines) -> None:
    for (backend, _), (directory, manifest) in engines.items():
        files = {p.name for p in directory.iterdir() if p.is_file()} - {MANIFEST_NAME}
        assert files == {manifest.engine_file, *manifest.data_files}, backend


def test_cuda_graphs_leave_cpu_calls_eager() -> None:
    """The torch engine's graph wrapper is the same code on the CPU, where it never
    captures (the capture itself is a gpu test)."""
    calls: list[torch.Size] = []

    def forward(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(images.shape)
        return images.mean((1, 2, 3)), images[:, 0]

    graphed = GraphedForward(forward)
    images = torch.rand(2, 1, 8, 8)
    for _ in range(3):
        probabilities, _ = graphed(images)
    assert len(calls) == 3 and not graphed.graphs
    torch.testing.assert_close(probabilities, images.mean((1, 2, 3)))


def test_a_shape_is_captured_at_its_second_call_and_replayed_after() -> None:
    """The rule, with a stand-in for the graph: a shape's first call runs eagerly (cuDNN
    chooses its kernels there), the second captures, later ones replay; a shape met once
    (a run's last, partial batch) is never captured."""
    events: list[str] = []

    def forward(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        events.append(f"eager {len(images)}")
        return images.mean((1, 2, 3)), images[:, 0]

    def capture(eager: Forward, example: torch.Tensor) -> Forward:
        events.append(f"capture {len(example)}")

        def replay(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            events.append(f"replay {len(images)}")
            return images.mean((1, 2, 3)), images[:, 0]

        return replay

    graphed = GraphedForward(forward, capture, capturable=lambda images: True)
    for batch in (8, 8, 8, 8, 3):
        graphed(torch.rand(batch, 1, 8, 8))
    assert events == ["eager 8", "capture 8", "replay 8", "replay 8", "replay 8", "eager 3"]


def test_an_engine_replaces_nothing_but_an_earlier_engine_and_that_on_request(
    tmp_path: Path,
) -> None:
    """A folder of the user's files is never deleted to make room for an engine; an
    earlier engine (its decision revisions too) goes only with --overwrite."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.txt").write_text("mine")
    build = ["build-engine", str(demo_model_path()), "--backend", "torch", "--precision", "fp32"]

    def invoke(*more: str) -> object:
        return CliRunner().invoke(main, [*build, "--out", str(out), *more])

    for flags in ([], ["--overwrite"]):
        refused = invoke(*flags)
        assert refused.exit_code == 1 and "is not an engine folder" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
        assert (out / "thesis.txt").read_text() == "mine"
    (out / "thesis.txt").unlink()
    assert invoke().exit_code == 0  # an empty folder is the engine's to fill
    (out / "manifest.r1.json").write_text((out / MANIFEST_NAME).read_text())  # a revision
    refused = invoke()
    assert refused.exit_code == 1 and "holds an earlier engine; pass --overwrite" in refused.output
    assert invoke("--overwrite").exit_code == 0
    assert not (out / "manifest.r1.json").exists()
    (out / "notes.txt").write_text("mine")  # the user's file inside an engine folder
    refused = invoke("--overwrite")
    assert refused.exit_code == 1 and "holds notes.txt, which is not its engine's" in refused.output
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_a_file_that_appears_in_the_destination_during_a_build_is_kept(tmp_path: Path) -> None:
    built, destination = tmp_path / "built", tmp_path / "engine"
    built.mkdir()
    destination.mkdir()
    (destination / "arrived.txt").write_text("mine")
    with pytest.raises(PsicbatchError, match="not an engine folder"):
        move_into_place(built, destination, overwrite=True)
    assert (destination / "arrived.txt").read_text() == "mine" and built.is_dir()


def test_a_held_instruction_set_gets_a_kernel_cache_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Inductor would reuse kernels built for the machine's own instructions under an
    ATEN_CPU_CAPABILITY hold (garbage outputs, measured): the hold gets its own cache; a
    cache someone chose is kept."""
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from psicbatch.engines.torch_engine import separate_kernel_cache

    default = os.path.abspath(default_cache_dir())
    for before, capability, after in (
        (None, "avx2", f"{default}-avx2"),
        (default, "avx2", f"{default}-avx2"),  # inductor writes its default back
        (str(tmp_path), "avx2", str(tmp_path)),
        (None, None, None),
    ):
        for name, value in (
            ("TORCHINDUCTOR_CACHE_DIR", before),
            ("ATEN_CPU_CAPABILITY", capability),
        ):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        separate_kernel_cache()
        assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == after


def test_a_reduced_precision_engine_checked_on_synthetic_images_says_how_to_check_it(
    tmp_path: Path,
) -> None:
    """Synthetic images need not hold the defects a line's images do, where bf16 or int8
    differ most from fp32: the build says how to measure parity on images like the line's."""
    for precision, noted in (("bf16", True), ("fp32", False)):
        build = ["build-engine", str(demo_model_path()), "--backend", "torch"]
        out = ["--precision", precision, "--out", str(tmp_path / precision)]
        result = CliRunner().invoke(main, [*build, *out])
        assert result.exit_code == 0, result.output
        said = "note: parity was measured on synthetic images; --parity-images DIR"
        assert (said in result.output) == noted, result.output


def test_an_engine_folder_that_is_not_there_is_said_so(tmp_path: Path) -> None:
    """It was called 'not an engine folder (no manifest.json)', as if it were a folder."""
    absent = tmp_path / "engines" / "line3"
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    result = CliRunner().invoke(main, ["run", str(image), "--engine", str(absent), "-o", "r"])
    assert (result.exit_code, result.output) == (1, f"Error: {absent}: no such engine folder\n")
