from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import psicbatch.train as train_module
from psicbatch import hardware
from psicbatch.checkpoint import Checkpoint, load_checkpoint
from psicbatch.data.layouts import read_dataset
from psicbatch.data.masks import DefectMasks
from psicbatch.data.memory import TensorDataset, load_into_memory
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.fingerprints import ImageSet
from psicbatch.losses import segmentation_loss, soft_dice_loss, weighted_cross_entropy
from psicbatch.memory_inference import predict_batches
from psicbatch.metrics import average_precision
from psicbatch.sampling import balanced_order, random_gains
from psicbatch.summaries import training_summary
from psicbatch.train import Trainer, partial_path
from psicbatch.train_options import TrainOptions
from tests.stops import main_thread_only, send_stop

SIZE = (64, 64)
# precision auto: bf16 where the CPU has it natively, else fp32 (emulated bf16 is ~6x slower)
TINY = TrainOptions(width=0.125, input_size=SIZE, seg_epochs=12, cls_epochs=10, batch_size=4)


def synthetic(tmp_path: Path, name: str, count: int, seed: int) -> TensorDataset:
    generate(tmp_path / name, count, SIZE, defect_rate=0.4, seed=seed)
    return load_into_memory(read_dataset(tmp_path / name, "folder"), SIZE, 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[TensorDataset, TensorDataset]:
    root = tmp_path_factory.mktemp("synth")
    return synthetic(root, "train", 60, seed=1), synthetic(root, "test", 40, seed=2)


def test_weighted_cross_entropy_balances_rare_pixels() -> None:
    masks = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    masks[0, 0, 0, :2] = True  # 2% defect pixels
    logits = torch.zeros(1, 1, 10, 10)
    # With every pixel at p = 0.5 the loss is log 2, whatever the balance.
    assert weighted_cross_entropy(logits, masks).item() == pytest.approx(np.log(2))
    # Calling every pixel clean (missing the 2 defect pixels) costs exactly as much as
    # calling every pixel defective (98 false alarms): the classes are balanced.
    all_clean = weighted_cross_entropy(torch.full((1, 1, 10, 10), -4.0), masks)
    all_defect = weighted_cross_entropy(torch.full((1, 1, 10, 10), 4.0), masks)
    assert all_clean.item() == pytest.approx(all_defect.item(), rel=1e-5)
    assert all_clean.item() > 2


def test_alpha_cap_weighs_defect_pixels_less() -> None:
    masks = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    masks[0, 0, 0, :2] = True  # alpha would be 0.98
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    miss, alarm = (
        bce(torch.tensor(-4.0), torch.tensor(1.0)),
        bce(torch.tensor(-4.0), torch.tensor(0.0)),
    )
    # All pixels called clean: 2 missed defect pixels at weight 0.9, 98 right at weight 0.1.
    expected = (2 * 0.9 * miss + 98 * 0.1 * alarm) / (2 * 0.9 + 98 * 0.1)
    capped = weighted_cross_entropy(torch.full((1, 1, 10, 10), -4.0), masks, alpha_cap=0.9)
    assert capped.item() == pytest.approx(expected.item(), rel=1e-5)
    assert capped < weighted_cross_entropy(torch.full((1, 1, 10, 10), -4.0), masks)


def test_soft_dice_loss_by_hand() -> None:
    masks = torch.zeros(1, 1, 1, 10, dtype=torch.bool)
    masks[0, 0, 0, :2] = True
    # p = 0.5 everywhere: overlap 2 x 0.5 = 1, predicted sum 5, true sum 2 -> Dice 2 / 7.
    assert soft_dice_loss(torch.zeros(1, 1, 1, 10), masks).item() == pytest.approx(5 / 7)
    exact = torch.where(masks, 20.0, -20.0)
    assert soft_dice_loss(exact, masks).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_loss_ignores_defect_free_images() -> None:
    masks = torch.zeros(2, 1, 1, 10, dtype=torch.bool)
    masks[1, 0, 0, :2] = True
    logits = torch.randn(2, 1, 1, 10)
    assert soft_dice_loss(logits, masks).item() == pytest.approx(
        soft_dice_loss(logits[1:], masks[1:]).item()
    )
    clean = torch.zeros(1, 1, 1, 10, requires_grad=True)
    loss = soft_dice_loss(clean, masks[:1])
    loss.backward()
    assert loss.item() == 0.0 and clean.grad is not None and not clean.grad.any()


def test_segmentation_loss_adds_dice_only_when_asked() -> None:
    masks = torch.zeros(1, 1, 1, 10, dtype=torch.bool)
    masks[0, 0, 0, :2] = True
    logits = torch.zeros(1, 1, 1, 10)
    plain = weighted_cross_entropy(logits, masks)
    assert segmentation_loss(logits, masks).item() == pytest.approx(plain.item())
    expected = plain.item() + 0.5 * 5 / 7
    assert segmentation_loss(logits, masks, dice_weight=0.5).item() == pytest.approx(expected)


@pytest.mark.parametrize("weight", [-0.1, 11.0])
def test_dice_weight_out_of_range(weight: float) -> None:
    with pytest.raises(PsicbatchError, match="--dice-weight"):
        TrainOptions(dice_weight=weight)


@pytest.mark.parametrize(
    ("epochs", "refused"),
    [
        ({"seg_epochs": 0}, "--seg-epochs 0"),
        ({"cls_epochs": 0}, "--cls-epochs 0"),
        ({"mode": "end-to-end", "seg_epochs": 0}, "--seg-epochs 0"),
    ],
)
def test_options_that_would_leave_weights_random_need_a_starting_checkpoint(
    epochs: dict, refused: str
) -> None:
    with pytest.raises(PsicbatchError, match=f"^{refused} .* or start from a trained"):
        TrainOptions(**epochs)
    TrainOptions(**epochs, init="ab" * 32)  # from trained weights: an epoch-less step keeps them
    TrainOptions(mode="end-to-end", cls_epochs=0)  # no step 2 to leave untrained


def test_balanced_order_takes_every_defect_and_as_many_clean() -> None:
    labels = torch.tensor([True, False, False, True, False, False, False])
    order = balanced_order(labels, np.random.default_rng(0))
    assert sorted(order[labels[order]].tolist()) == [0, 3]
    assert len(order) == 4


def test_balanced_order_needs_a_defect() -> None:
    with pytest.raises(PsicbatchError, match="at least one defective"):
        balanced_order(torch.tensor([False, False]), np.random.default_rng(0))


def test_dilate_masks() -> None:
    masks = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    masks[0, 0, 2, 2] = True
    held = DefectMasks.from_tensor(masks)
    assert held.dilated(1)[:].sum() == 9
    assert held.dilated(0) is held


def test_dilating_a_few_masks_at_a_time_equals_dilating_all_at_once() -> None:
    """Masks are dilated in chunks, defect-free ones skipped, to keep the memory low."""
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(40, 1, 24, 32, generator=generator) > 0.995
    masks[::3] = False  # defect-free images among them
    expected = torch.nn.functional.max_pool2d(masks.float(), 5, stride=1, padding=2) > 0
    assert torch.equal(DefectMasks.from_tensor(masks).dilated(2)[:], expected)
    assert masks.flatten(1).any(dim=1).sum() > 16  # more than one chunk


def test_two_step_training_learns(tmp_path: Path, data: tuple) -> None:
    train, test = data
    checkpoint = Trainer(train, TINY, tmp_path / "model.pt").run()
    history = checkpoint.training["loss_history"]
    assert np.mean(history["segmentation"][-3:]) < 0.7 * np.mean(history["segmentation"][:2])
    assert np.mean(history["classification"][-3:]) < np.mean(history["classification"][:2])
    model = checkpoint.build_model()
    (_, probabilities, _), *_ = predict_batches(
        model, test.images, checkpoint.preprocessing, 64, torch.device("cpu"), "fp32"
    )
    chance = test.labels.float().mean().item()
    assert average_precision(test.labels.numpy(), probabilities.numpy()) > chance + 0.3
    saved = load_checkpoint(tmp_path / "model.pt")
    assert saved.training["complete"] and saved.training["epochs_done"] == {
        "segmentation": 12,
        "classification": 10,
    }
    assert 0 < saved.thresholds.classification < 1 and 0 < saved.thresholds.segmentation < 1
    assert not partial_path(tmp_path / "model.pt").exists()


def test_end_to_end_mode_runs(tmp_path: Path, data: tuple) -> None:
    options = TrainOptions(**{**TINY.__dict__, "mode": "end-to-end", "seg_epochs": 3})
    checkpoint = Trainer(data[0], options, tmp_path / "e2e.pt").run()
    assert list(checkpoint.training["loss_history"]) == ["end-to-end"]


def test_training_with_a_dice_term_learns(tmp_path: Path, data: tuple) -> None:
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 6, "cls_epochs": 1, "dice_weight": 1})
    history = Trainer(data[0], options, tmp_path / "dice.pt").run().training["loss_history"]
    # The Dice term falls more slowly than cross-entropy alone (the 0.8 above): 0.80-0.81
    # here, depending on the thread count's float rounding; no learning would stay near 1.
    assert np.mean(history["segmentation"][-2:]) < 0.9 * np.mean(history["segmentation"][:2])


def _stopped_then_resumed(
    data: TensorDataset,
    options: TrainOptions,
    out: Path,
    at_save: int,
    monkeypatch: pytest.MonkeyPatch,
) -> Checkpoint:
    """A training stopped (KeyboardInterrupt) as it saves for the ``at_save``-th time,
    then resumed: its final checkpoint."""
    real_save, saves = train_module.save_checkpoint, []

    def stop_at(checkpoint: object, path: Path) -> object:
        saves.append(path)
        if len(saves) == at_save:
            raise KeyboardInterrupt
        return real_save(checkpoint, path)

    monkeypatch.setattr(train_module, "save_checkpoint", stop_at)
    with pytest.raises(KeyboardInterrupt):
        Trainer(data, options, out).run()
    assert partial_path(out).exists() and not out.exists()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    return Trainer(data, options, out).run(resume=True)


def test_resume_after_crash_gives_the_same_model(
    tmp_path: Path, data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 4, "cls_epochs": 3})
    reference = Trainer(data[0], options, tmp_path / "straight.pt").run()
    # Stopped after 4 segmentation epochs, during classification.
    resumed = _stopped_then_resumed(data[0], options, tmp_path / "resumed.pt", 5, monkeypatch)
    assert resumed.training["loss_history"] == reference.training["loss_history"]
    for name, tensor in reference.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[name]), name
    assert resumed.thresholds == reference.thresholds


@pytest.mark.parametrize(
    ("capability", "layout"), [("AVX2", "contiguous"), ("AVX512", "channels_last")]
)
def test_training_on_the_cpu_runs_in_the_layout_measured_faster_there(
    tmp_path: Path, data: tuple, monkeypatch: pytest.MonkeyPatch, capability: str, layout: str
) -> None:
    """channels_last trained faster with AVX-512 kernels and slower on an AVX2-only CPU;
    checkpoints record the layout and load alike."""
    cpu = dataclasses.replace(hardware.cpu_precisions(), capability=capability)
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: cpu)
    real_phase, layouts = Trainer._run_phase, []

    def phase(self: Trainer, model: torch.nn.Module, *args: object) -> None:
        weights = [p for p in model.parameters() if p.dim() == 4]
        layouts.append(all(w.is_contiguous(memory_format=torch.channels_last) for w in weights))
        real_phase(self, model, *args)

    monkeypatch.setattr(Trainer, "_run_phase", phase)
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 1, "cls_epochs": 1})
    checkpoint = Trainer(data[0], options, tmp_path / "m.pt").run()
    assert layouts == [layout == "channels_last"] * 2
    assert checkpoint.training["layout"] == layout
    assert training_summary(checkpoint.training)["layout"] == layout  # as info shows it
    model = load_checkpoint(tmp_path / "m.pt").build_model()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint.state_dict[name]), name


def test_resume_refuses_other_options(tmp_path: Path, data: tuple) -> None:
    out = tmp_path / "m.pt"
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 1, "cls_epochs": 1})
    train_module.save_checkpoint(
        Trainer(data[0], options, out).run(), partial_path(out)
    )  # a finished model standing in as a partial one
    changed = TrainOptions(**{**options.__dict__, "seed": 7, "input_size": (40, 24)})
    size = f"{options.input_size[0]}x{options.input_size[1]}"
    named = f"other options .*: --input-size {size} there, 40x24 now, --seed 0 there, 7 now$"
    with pytest.raises(PsicbatchError, match=named):
        Trainer(data[0], changed, out).run(resume=True)


def test_random_gains_stay_within_their_spread_and_the_pixel_range() -> None:
    pixels = torch.full((200, 1, 4, 4), 200, dtype=torch.uint8)
    lit = random_gains(pixels, 0.3, 255.0, np.random.default_rng(0))
    gains = lit[:, 0, 0, 0] / 200
    assert lit.dtype == torch.float32 and bool((lit == lit[:, :, :1, :1]).all())  # per image
    assert gains.min() >= 0.7 and gains[lit[:, 0, 0, 0] < 255].max() <= 1.3
    assert gains.max() == 255 / 200  # brighter than the range: clipped
    assert gains.std() > 0.1  # spread, not one gain for all
    again = random_gains(pixels, 0.3, 255.0, np.random.default_rng(0))
    assert torch.equal(lit, again)


def test_brightness_trains_under_random_light_and_resumes_to_the_same_model(
    tmp_path: Path, data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 1 draws each image's light afresh; step 2 draws among three lit copies of the
    frozen network's outputs besides the image as it is (copy 0: the plain training's)."""
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 2, "cls_epochs": 2})
    lit = TrainOptions(**{**options.__dict__, "brightness": 0.3})
    caches = []
    real_frozen = Trainer._frozen_outputs

    def frozen(self: Trainer, *args: object) -> tuple:
        caches.append(real_frozen(self, *args))
        return caches[-1]

    monkeypatch.setattr(Trainer, "_frozen_outputs", frozen)
    plain = Trainer(data[0], options, tmp_path / "plain.pt").run()
    straight = Trainer(data[0], lit, tmp_path / "lit.pt").run()
    assert [len(cache[0]) for cache in caches] == [1, 4]
    assert not torch.equal(caches[1][0][1], caches[1][0][0])  # another light, other features
    differs = [n for n, t in plain.state_dict.items() if not torch.equal(t, straight.state_dict[n])]
    assert differs  # the segmentation part learnt under other light
    monkeypatch.setattr(Trainer, "_frozen_outputs", real_frozen)
    # Stopped after step 1, during step 2.
    resumed = _stopped_then_resumed(data[0], lit, tmp_path / "resumed.pt", 3, monkeypatch)
    for name, tensor in straight.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[name]), name
    assert resumed.training["options"]["brightness"] == 0.3


def test_resume_refuses_other_data_and_other_images(tmp_path: Path, data: tuple) -> None:
    """Resuming on other images would learn from them under the first ones' record."""
    out = tmp_path / "m.pt"
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 1, "cls_epochs": 1})

    def metadata(path: str, images: bytes, command: str = "psicbatch train a") -> dict:
        digests = ImageSet.of_digests([hashlib.sha256(images).digest()]).encode()
        dataset = {"path": path, "split": "train", "images": 12, "command": command}
        return {"dataset": dataset, "image_digests": digests}

    first = metadata("a", b"first")
    train_module.save_checkpoint(
        Trainer(data[0], options, out, None, first).run(), partial_path(out)
    )
    with pytest.raises(PsicbatchError, match=r"other data .*: path a there, b now$"):
        Trainer(data[0], options, out, None, metadata("b", b"first")).run(resume=True)
    with pytest.raises(PsicbatchError, match="other images: files were added, removed or changed"):
        Trainer(data[0], options, out, None, metadata("a", b"other")).run(resume=True)
    again = metadata("a", b"first", command="psicbatch train a --resume")
    resumed = Trainer(data[0], options, out, None, again).run(resume=True)
    assert resumed.training["image_digests"] == first["image_digests"]


def test_resume_accepts_a_partial_run_saved_before_a_new_option(
    tmp_path: Path, data: tuple
) -> None:
    out = tmp_path / "m.pt"
    options = TrainOptions(**{**TINY.__dict__, "seg_epochs": 1, "cls_epochs": 1})
    older = Trainer(data[0], options, out).run()
    del older.training["options"]["dice_weight"]  # as saved before the option existed
    train_module.save_checkpoint(older, partial_path(out))
    resumed = Trainer(data[0], options, out).run(resume=True)
    assert resumed.training["epochs_done"] == {"segmentation": 1, "classification": 1}


def test_resume_without_partial(tmp_path: Path, data: tuple) -> None:
    with pytest.raises(PsicbatchError, match="nothing to resume"):
        Trainer(data[0], TINY, tmp_path / "none.pt").run(resume=True)


def brute_force_threshold(defect: list, background: list, criterion: str) -> float:
    """The best bin edge by direct counting over every image's pixel probabilities."""
    best, best_score = 0.0, -1.0
    for edge in np.linspace(0, 1, 201):
        tps = [int((d >= edge).sum()) for d in defect]
        fps = [int((b >= edge).sum()) for b in background]
        if criterion == "iou":
            score = np.mean(
                [tp / (fp + len(d)) for tp, fp, d in zip(tps, fps, defect, strict=True)]
            )
        else:
            tp, fp, total = sum(tps), sum(fps), sum(len(d) for d in defect)
            score = 2 * tp / (tp + fp + total)
        if score > best_score + 1e-12:
            best, best_score = edge, score
    return best


def defect_sizes_that_differ() -> tuple[list, list, list[torch.Tensor]]:
    """A large defect found at moderate probability, next to small ones found confidently:
    per-image pixel probabilities, and their per-image histograms (200 bins)."""
    rng = np.random.default_rng(3)
    defect = [rng.uniform(0.55, 0.75, 900), rng.uniform(0.85, 0.99, 12), rng.uniform(0.9, 1, 8)]
    background = [rng.uniform(0, 0.7, 3000), rng.uniform(0, 0.88, 3000), rng.uniform(0, 0.6, 3000)]
    histograms = [
        torch.stack([torch.histc(torch.from_numpy(a).float(), 200, 0, 1) for a in arrays])
        for arrays in (defect, background)
    ]
    return defect, background, histograms


@pytest.mark.parametrize("criterion", ["f1", "iou"])
def test_pixel_threshold_is_the_best_by_direct_counting(criterion: str) -> None:
    from psicbatch.pixel_threshold import choose_pixel_threshold

    defect, background, histograms = defect_sizes_that_differ()
    chosen = choose_pixel_threshold(*histograms, criterion)
    assert chosen == pytest.approx(brute_force_threshold(defect, background, criterion), abs=1e-6)


def test_mean_iou_and_pooled_f1_thresholds_differ_when_defect_sizes_differ() -> None:
    from psicbatch.pixel_threshold import choose_pixel_threshold

    _, _, histograms = defect_sizes_that_differ()
    assert choose_pixel_threshold(*histograms, "iou") != choose_pixel_threshold(*histograms, "f1")


def test_bf16_training_runs_and_is_recorded(tmp_path: Path, data: tuple) -> None:
    """bf16 autocast, small enough to be cheap where bf16 is emulated."""
    labels = data[0].labels.tolist()
    few = data[0].subset([labels.index(True), labels.index(False), *range(4)])
    options = TrainOptions(
        **{**TINY.__dict__, "seg_epochs": 1, "cls_epochs": 1, "precision": "bf16"}
    )
    checkpoint = Trainer(few, options, tmp_path / "bf16.pt").run()
    assert checkpoint.training["precision"] == {"precision": "bf16", "reason": "as requested"}
    assert all(np.isfinite(checkpoint.training["loss_history"]["segmentation"]))


def test_channel_statistics_summed_a_few_images_at_a_time() -> None:
    """The normalisation's mean and (unbiased) std, summed in chunks in float64, equal
    those of every pixel at once, for 8-bit colour and 16-bit grayscale."""
    generator = torch.Generator().manual_seed(1)
    for channels, bit_depth in ((3, 8), (1, 16)):
        high = 2**bit_depth
        pixels = torch.randint(0, high, (37, channels, 20, 30), generator=generator)
        dtype = torch.uint8 if bit_depth == 8 else torch.uint16
        data = TensorDataset(
            pixels.to(dtype),
            DefectMasks(37, (20, 30)),
            torch.zeros(37, dtype=torch.bool),
            [(20, 30)] * 37,
            bit_depth,
        )
        every = (pixels.double() / (high - 1)).transpose(0, 1).reshape(channels, -1)
        mean, std = data.channel_stats()
        assert mean == pytest.approx(every.mean(dim=1).tolist(), abs=1e-12)
        assert std == pytest.approx(every.std(dim=1).tolist(), abs=1e-12)


def test_defective_images_without_masks_teach_the_decision_not_the_masks(
    tmp_path: Path, data: tuple
) -> None:
    """A review's defective images without masks: whatever their stored masks hold (all
    defect, or none), the model is the same, so their pixels are never learned from or
    judged by; known, the same masks change the model."""
    from dataclasses import replace

    train = data[0]
    unknown = np.flatnonzero(train.labels.numpy())[::2]
    known = torch.ones(len(train.labels), dtype=torch.bool)
    known[unknown] = False
    options = replace(TINY, seg_epochs=2, cls_epochs=2, precision="fp32")
    models = {}
    for fill in (True, False):
        masks = train.masks[:]
        masks[unknown] = fill
        held = replace(train, masks=DefectMasks.from_tensor(masks), mask_known=known)
        models[fill] = Trainer(held, options, tmp_path / f"{fill}.pt").run()
    full, empty = models[True], models[False]
    assert full.thresholds == empty.thresholds
    for name, weights in full.state_dict.items():
        assert torch.equal(weights, empty.state_dict[name]), name
    masks = train.masks[:]
    masks[unknown] = True
    believed = Trainer(
        replace(train, masks=DefectMasks.from_tensor(masks)), options, tmp_path / "k.pt"
    ).run()
    assert any(
        not torch.equal(weights, believed.state_dict[name])
        for name, weights in full.state_dict.items()
        if not name.startswith("classifier")
    )
    # End to end, every image teaches the masks: refused; and the masks need some.
    with pytest.raises(PsicbatchError, match="end-to-end training learns masks and decisions"):
        Trainer(
            replace(train, mask_known=known), replace(options, mode="end-to-end"), tmp_path / "e"
        )
    none_known = known & ~train.labels
    with pytest.raises(PsicbatchError, match="no defective training image has a mask"):
        Trainer(replace(train, mask_known=none_known), options, tmp_path / "n")


def test_balanced_order_among_some_images() -> None:
    labels = torch.tensor([True, True, True, False, False, False, False])
    among = torch.tensor([True, False, True, True, True, True, True])
    order = balanced_order(labels, np.random.default_rng(0), among)
    assert sorted(order.tolist())[:2] == [0, 2] and 1 not in order and len(order) == 4


def test_every_recorded_training_option_is_named_as_the_command_line_spells_it() -> None:
    """A resume or a cv rerun refused for other options names each as the user gives it."""
    from psicbatch.commands.training import train
    from psicbatch.train_options import UNSET_BY_OPTIONS, option_name

    flags = {flag for param in train.params for flag in (*param.opts, *param.secondary_opts)}
    for key in TrainOptions().to_dict():
        assert option_name(key) in flags or option_name(key) == key in UNSET_BY_OPTIONS, key


def test_a_swallowed_stop_stops_the_training_at_its_next_step(
    data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    """The signal handler ignores further signals: a stop that the code it interrupted
    swallowed would leave hours of training deaf to Ctrl-C."""
    from psicbatch.run.shutdown import Stopped, signals_stop

    main_thread_only()
    with signals_stop():
        with contextlib.suppress(Stopped):  # swallowed, as by a finalizer
            send_stop()
        with pytest.raises(Stopped):
            Trainer(data[0], TINY, tmp_path / "m.pt").run()


def test_images_loaded_by_several_threads_are_those_read_one_by_one_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training decodes its images by a thread per CPU; each row of the dataset is still
    its sample's pixels, size and mask, and a file that cannot be read is named as the
    first such in the samples' order."""
    from psicbatch.data import memory
    from psicbatch.preprocess import read_resized, resize_mask

    generate(tmp_path / "d", 12, (40, 56), defect_rate=0.5, seed=5)
    samples = read_dataset(tmp_path / "d", "folder")
    monkeypatch.setattr(memory, "available_cpus", lambda: 3)
    data = load_into_memory(samples, (32, 48), 1)
    for index, sample in enumerate(samples):
        image, size = read_resized(sample.image_path, (32, 48), 1)
        assert np.array_equal(data.images[index].numpy(), image.transpose(2, 0, 1))
        assert data.original_sizes[index] == size == (40, 56)
        mask = resize_mask(memory.defect_mask(sample, size), (32, 48))
        assert np.array_equal(data.masks[[index]][0, 0].numpy(), mask)
    assert data.labels.tolist() == [sample.is_defective for sample in samples]
    for late in (9, 4):
        samples[late].image_path.write_bytes(b"")
    with pytest.raises(PsicbatchError, match=r"synth_00004\.png: empty file"):
        load_into_memory(samples, (32, 48), 1)
