from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from psicbatch.checkpoint import (
    Checkpoint,
    Preprocessing,
    Thresholds,
    load_checkpoint,
    save_checkpoint,
)
from psicbatch.errors import CheckpointError
from psicbatch.model import ModelConfig, PSICNet


def make_checkpoint() -> Checkpoint:
    model = PSICNet(ModelConfig(width=0.125))
    # Non-default BatchNorm statistics, so the round trip covers buffers too.
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 48, 40))
    return Checkpoint.from_model(
        model,
        Preprocessing(input_size=(48, 40), mean=(0.4,), std=(0.2,)),
        Thresholds(classification=0.7, segmentation=0.3),
        training={"mode": "two-step", "epochs": [3, 2]},
    )


def test_round_trip_preserves_outputs_exactly(tmp_path: Path) -> None:
    original = make_checkpoint()
    path = save_checkpoint(original, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.model_config == original.model_config
    assert loaded.preprocessing == original.preprocessing
    assert loaded.thresholds == original.thresholds
    assert loaded.training == original.training
    images = torch.randn(3, 1, 48, 40)
    with torch.no_grad():
        expected = original.build_model()(images)
        actual = loaded.build_model()(images)
    assert torch.equal(expected[0], actual[0]) and torch.equal(expected[1], actual[1])


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    save_checkpoint(make_checkpoint(), tmp_path / "sub" / "model.pt")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["model.pt"]


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "absent.pt", "no such file")


def test_directory(tmp_path: Path) -> None:
    _expect_error(tmp_path, "not a file")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    _expect_error(path, "not a PyTorch checkpoint")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    """A copy cut short is a damaged checkpoint, not 'not a PyTorch checkpoint'."""
    path = save_checkpoint(make_checkpoint(), tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[:-5000])
    _expect_error(path, "damaged PyTorch file (a zip archive without its end: a copy or download")


def test_a_damaged_archive_is_said_without_torchs_request_for_reports(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", b"garbage")
    message = _expect_error(path, "damaged PyTorch file (")
    assert "Could this error message be improved" not in message and message.endswith(")")


def test_bare_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(PSICNet(ModelConfig(width=0.125)).state_dict(), path)
    _expect_error(path, "not a psicbatch checkpoint", "bare state_dict")


def test_other_torch_object(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    _expect_error(path, "not a psicbatch checkpoint", "list")


def test_newer_format_version(tmp_path: Path) -> None:
    data = make_checkpoint().to_dict()
    data["format_version"] = 99
    torch.save(data, tmp_path / "future.pt")
    _expect_error(tmp_path / "future.pt", "format version 99", "upgrade psicbatch")


def test_tampered_weights(tmp_path: Path) -> None:
    data = make_checkpoint().to_dict()
    name = next(iter(data["state_dict"]))
    data["state_dict"][name] = torch.zeros(3, 3)
    torch.save(data, tmp_path / "tampered.pt")
    _expect_error(tmp_path / "tampered.pt", name, "(3, 3)")


def test_weights_for_another_width(tmp_path: Path) -> None:
    data = make_checkpoint().to_dict()
    data["model"]["width"] = 0.25
    torch.save(data, tmp_path / "wrong-width.pt")
    _expect_error(tmp_path / "wrong-width.pt", "expected")


def test_missing_weights(tmp_path: Path) -> None:
    data = make_checkpoint().to_dict()
    data["state_dict"].pop(next(iter(data["state_dict"])))
    torch.save(data, tmp_path / "partial.pt")
    _expect_error(tmp_path / "partial.pt", "1 missing")


def test_invalid_configuration(tmp_path: Path) -> None:
    data = make_checkpoint().to_dict()
    data["model"]["width"] = -1
    torch.save(data, tmp_path / "bad-config.pt")
    _expect_error(tmp_path / "bad-config.pt", "invalid configuration")


class _RunsCode:
    """Pickles to a call of os.system: loading it unsafely would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    data = make_checkpoint().to_dict()
    data["training"] = {"payload": _RunsCode(marker)}
    torch.save(data, tmp_path / "evil.pt")
    _expect_error(tmp_path / "evil.pt", "refused", "could run code", "system")
    assert not marker.exists()


def test_a_model_gets_a_copy_of_the_weights_in_the_networks_own_types(tmp_path: Path) -> None:
    """Built on the meta device and given the weights: a model trained on does not change
    its checkpoint, and weights stored in another float type are the network's again."""
    checkpoint = make_checkpoint()
    wider = {name: tensor.double() for name, tensor in checkpoint.state_dict.items()}
    model = Checkpoint(checkpoint.model_config, checkpoint.preprocessing, wider).build_model()
    for name, tensor in model.state_dict().items():
        assert tensor.device.type == "cpu" and tensor.dtype == checkpoint.state_dict[name].dtype
        assert torch.equal(tensor, checkpoint.state_dict[name].to(tensor.dtype))
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert not model.training
    model = checkpoint.build_model()
    before = {name: tensor.clone() for name, tensor in checkpoint.state_dict.items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    assert all(torch.equal(before[name], checkpoint.state_dict[name]) for name in before)


def test_the_configuration_alone_maps_the_weights_and_any_archive_is_read(tmp_path: Path) -> None:
    """``weights=False`` maps the weights instead of reading them; an archive whose records
    are compressed (zipped again) is read, not mapped: torch maps it as garbage weights."""
    import zipfile

    path = save_checkpoint(make_checkpoint(), tmp_path / "model.pt")
    mapped = load_checkpoint(path, weights=False)
    assert str(path) in _mapped_files()
    assert mapped.model_config == load_checkpoint(path).model_config
    zipped = tmp_path / "zipped.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as to:
        for record in source.infolist():
            to.writestr(record.filename, source.read(record.filename))
    read = load_checkpoint(zipped, weights=False)
    assert read.preprocessing == mapped.preprocessing and str(zipped) not in _mapped_files()
    for name, tensor in read.state_dict.items():
        assert torch.equal(tensor, mapped.state_dict[name])


def _mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def test_a_file_written_again_in_place_gets_its_new_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Digests are remembered for a file as it is: the same size written again in place
    (same name, same inode), at once or later, is hashed again."""
    from psicbatch import paths

    monkeypatch.setattr(paths, "SETTLED_NS", 200_000_000)
    path = tmp_path / "model.pt"
    path.write_bytes(b"a" * 4096)
    first = paths.file_sha256(path)
    with path.open("r+b") as file:
        file.write(b"b")  # within the file system's time resolution, maybe
    second = paths.file_sha256(path)
    assert second != first
    time.sleep(paths.SETTLED_NS / 1e9)
    assert paths.file_sha256(path) == second
    with path.open("r+b") as file:
        file.write(b"c")
    assert paths.file_sha256(path) not in (first, second)


STALLED = (
    "took longer than 0.5 s to read (a network share that stopped answering? set "
    "PSICBATCH_READ_TIMEOUT to wait longer)"
)


def stall(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """``owner.name`` waits 3 s before it does its work, as a read from a network share
    that stopped answering would wait for ever; the read limit is 0.5 s."""
    monkeypatch.setenv("PSICBATCH_READ_TIMEOUT", "0.5")
    real = getattr(owner, name)

    def stalled(*args: object, **kwargs: object) -> object:
        time.sleep(3)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, stalled)


def test_a_model_that_does_not_come_is_one_line_after_the_read_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model read from a share that stopped answering held every command that reads
    one (info, eval, build-engine, train --init, a run's workers) for ever, in a system
    call no Ctrl-C interrupts. It is read within the read limit."""
    from click.testing import CliRunner

    from psicbatch import checkpoint
    from psicbatch.cli import main

    path = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(), path)
    stall(monkeypatch, checkpoint, "check_checkpoint_file")
    began = time.monotonic()
    result = CliRunner().invoke(main, ["info", str(path)])
    assert time.monotonic() - began < 2.5
    assert (result.exit_code, result.output.strip()) == (1, f"Error: {path}: {STALLED}")


def test_a_digest_or_manifest_that_does_not_come_is_one_line_after_the_read_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psicbatch import paths
    from psicbatch.engines.manifest import MANIFEST_NAME, read_manifest
    from psicbatch.errors import PsicbatchError

    (tmp_path / MANIFEST_NAME).write_text("{}")
    stall(monkeypatch, paths, "hashed_file")
    with pytest.raises(PsicbatchError) as digest:
        paths.file_sha256(tmp_path / MANIFEST_NAME)
    stall(monkeypatch, Path, "read_text")
    with pytest.raises(PsicbatchError) as manifest:
        read_manifest(tmp_path)
    assert str(digest.value) == f"{tmp_path / MANIFEST_NAME}: {STALLED}"
    assert str(manifest.value) == f"{tmp_path / MANIFEST_NAME}: {STALLED}"
