"""Training PSIC-Net (paper section 3.2).

``two-step`` (the paper's mode, default):
  1. feature extraction + inverse convolution trained on the segmentation task with the
     weighted cross-entropy of eq. (2): per batch, defect pixels weigh alpha = |X-|/|X| and
     background pixels 1 - alpha, so the rare defect pixels are not drowned out;
  2. those parts frozen, the classification network trained with a weighted binary
     cross-entropy (positive weight = defect-free / defective images). Frozen parts give
     the same output every epoch, so their output is computed once and cached.
``end-to-end`` (eq. 1, for comparison): L = lambda L_seg + delta (1 - lambda) L_cls with
  lambda falling linearly from 1 to 0 over the epochs.

Optimiser: plain SGD without momentum, learning rate decaying polynomially to zero, as the
paper describes. Segmentation epochs see every defective image and as many randomly drawn
defect-free ones (balanced sampling). After training, both decision thresholds are chosen
(best F1) on the training images, or on the validation images, and saved. Progress is
checkpointed after every epoch to ``OUT.partial``; ``resume`` continues from there with
the same result as an uninterrupted run.
With a ``start`` (``--init``), training begins from a trained checkpoint's weights and
normalisation instead of random ones and the images' statistics (``fine_tuning``). With
``validation`` images, every epoch is also scored on them (``validation``), and with
``keep="best"`` each phase ends with the weights of its best-scoring epoch: those of the
best so far are held in ``OUT.best.partial``, so a resumed training keeps them too.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from psicbatch import hardware
from psicbatch.checkpoint import (
    Checkpoint,
    Preprocessing,
    Thresholds,
    load_checkpoint,
    save_checkpoint,
)
from psicbatch.data.memory import TensorDataset
from psicbatch.devices import resolve_device
from psicbatch.engines.frequency_conv import large_kernel_method, large_kernels_in_frequency_domain
from psicbatch.engines.manifest import FREQUENCY_DOMAIN
from psicbatch.errors import PsicbatchError
from psicbatch.fine_tuning import StartingPoint
from psicbatch.loss_scaling import LossScale
from psicbatch.losses import defect_weight, segmentation_loss
from psicbatch.memory_inference import predict_batches
from psicbatch.metrics import best_f1_threshold
from psicbatch.model import ModelConfig, PSICNet
from psicbatch.pixel_threshold import (
    HISTOGRAM_BINS,
    choose_pixel_threshold,
    pixel_histograms,
)
from psicbatch.precision import autocast, choose_precision
from psicbatch.preprocess import normalize
from psicbatch.run.shutdown import raise_if_stopped
from psicbatch.sampling import balanced_order, random_flips, random_gains
from psicbatch.train_options import (
    TrainOptions,
    changed_values,
    check_masks,
    option_name,
    with_defaults,
)
from psicbatch.validation import EpochValidation, best_epoch

PHASES = ("segmentation", "classification", "end-to-end")
LIT_COPIES = 3  # with --brightness, step 2 sees each image under this many random lights more


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def best_path(out: Path) -> Path:
    """Where ``keep="best"`` holds the weights of the current phase's best epoch so far."""
    return out.with_name(out.name + ".best.partial")


def _poly_lr(base: float, step: int, total: int) -> float:
    return base * (1 - step / max(1, total)) ** 0.9


class Trainer:
    """Runs the phases of one training, saving progress after every epoch."""

    def __init__(
        self,
        data: TensorDataset,
        options: TrainOptions,
        out: Path,
        progress: Progress | None = None,
        metadata: dict[str, Any] | None = None,
        start: StartingPoint | None = None,
        validation: TensorDataset | None = None,
    ) -> None:
        if start is not None:
            start.check_fits(options.init, options.width, data.images.shape[1], data.bit_depth)
        elif options.init is not None:
            raise ValueError("options.init names a starting checkpoint; pass it as start")
        options.check_validation(validated=validation is not None)
        self.data = data
        self.options = options
        self.out = out
        self.progress = progress
        self.device = torch.device(resolve_device(options.device))
        self.precision_choice = choose_precision(
            options.precision, "torch", self.device, training=True
        )
        self.precision = self.precision_choice.precision
        self.loss_scale = LossScale.for_precision(self.precision)
        self.masks = data.masks.dilated(options.dilate)
        self.mask_known = data.masks_known()
        self.metadata = metadata or {}
        self.start = start
        self.validation = (
            None
            if validation is None
            else EpochValidation(validation, options, self.device, self.precision)
        )
        check_masks(data.labels.tolist(), self.mask_known.tolist(), options.mode)

    def run(self, resume: bool = False) -> Checkpoint:
        model, preprocessing, state = self._start(resume)
        state["precision"] = self.precision_choice.record()
        if "loss_scale" in state:  # a resumed fp16 training goes on at its scale
            self.loss_scale = LossScale(**state["loss_scale"])
        model.to(self.device)
        state["layout"] = hardware.training_layout(self.device)
        if state["layout"] == "channels_last":
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # conv10 by FFT where that is faster (weights and state dict unchanged)
        state["large_kernels"] = large_kernel_method(self.device, self.precision)
        if state["large_kernels"] == FREQUENCY_DOMAIN:
            large_kernels_in_frequency_domain(model)
        phases = (
            [("segmentation", self.options.seg_epochs), ("classification", self.options.cls_epochs)]
            if self.options.mode == "two-step"
            else [("end-to-end", self.options.seg_epochs)]
        )
        for phase, epochs in phases:
            done = state["epochs_done"].get(phase, 0)
            if done < epochs:
                self._run_phase(model, preprocessing, state, phase, done, epochs)
            self._keep_best(model, preprocessing, state, phase)
        thresholds = self._choose_thresholds(model, preprocessing)
        state["complete"] = True
        final = self._checkpoint(model, preprocessing, state, thresholds)
        save_checkpoint(final, self.out)
        partial_path(self.out).unlink(missing_ok=True)
        best_path(self.out).unlink(missing_ok=True)
        return final

    def _check_same_data(self, partial: Path, state: dict[str, Any]) -> None:
        """A resumed training goes on with the images it started with: others would be
        learnt from under the record of the first ones (the command line aside, which
        ``--resume`` itself changes)."""
        recorded, now = (
            {key: value for key, value in (record or {}).items() if key != "command"}
            for record in (state.get("dataset"), self.metadata.get("dataset"))
        )
        if recorded != now:
            raise PsicbatchError(
                f"{partial}: was started on other data (rerun without --resume, or with the "
                f"same data){changed_values(recorded, now)}"
            )
        if state.get("validation") != self.metadata.get("validation"):
            raise PsicbatchError(
                f"{partial}: was started with other validation images, or none (rerun "
                "without --resume, or with the same --validation)"
            )
        images = self.metadata.get("image_digests")
        if self.start is not None:
            images = self.start.seen_with(images)
        if images is not None and state.get("image_digests") != images:
            raise PsicbatchError(
                f"{partial}: was started on other images: files were added, removed or "
                "changed since (rerun without --resume to train on them)"
            )

    def _start(self, resume: bool) -> tuple[PSICNet, Preprocessing, dict[str, Any]]:
        partial = partial_path(self.out)
        if resume and partial.exists():
            saved = load_checkpoint(partial)
            state = saved.training
            saved_options = with_defaults(state.get("options", {}))
            if saved_options != self.options.to_dict():
                changes = changed_values(saved_options, self.options.to_dict(), option_name)
                raise PsicbatchError(
                    f"{partial}: was started with other options (rerun without --resume "
                    f"or with the same options){changes}"
                )
            self._check_same_data(partial, state)
            return saved.build_model(), saved.preprocessing, state
        if resume:
            raise PsicbatchError(f"{partial}: nothing to resume (no partial training found)")
        best_path(self.out).unlink(missing_ok=True)  # an earlier training's
        torch.manual_seed(self.options.seed)
        state = {
            "options": self.options.to_dict(),
            "epochs_done": {},
            "loss_history": {},
            "complete": False,
            **self.metadata,
        }
        if self.start is not None:  # fine-tuning: its weights, and what they were learnt on
            model = self.start.checkpoint.build_model()
            preprocessing = replace(
                self.start.checkpoint.preprocessing,
                input_size=self.options.input_size,
                tile_overlap=self.options.tile_overlap,
            )
            state["init"] = self.start.record()
            if (seen := self.start.seen_with(state.get("image_digests"))) is not None:
                state["image_digests"] = seen
            return model, preprocessing, state
        config = ModelConfig(width=self.options.width, in_channels=self.data.images.shape[1])
        mean, std = self.data.channel_stats()
        preprocessing = Preprocessing(
            self.options.input_size,
            mean,
            std,
            bit_depth=self.data.bit_depth,
            tile_overlap=self.options.tile_overlap,
        )
        return PSICNet(config), preprocessing, state

    def _run_phase(
        self,
        model: PSICNet,
        preprocessing: Preprocessing,
        state: dict[str, Any],
        phase: str,
        done: int,
        epochs: int,
    ) -> None:
        epoch_fn = {
            "segmentation": self._segmentation_epoch,
            "classification": self._classification_epoch,
            "end-to-end": self._end_to_end_epoch,
        }[phase]
        cache = self._frozen_outputs(model, preprocessing) if phase == "classification" else None
        task = self._task(f"training {phase}", epochs, done)
        history = state["loss_history"].setdefault(phase, [])
        held_out = self._held_out_inputs(model, preprocessing, phase)
        if done and self._best_epoch(state, phase) == done:  # stopped before it was held
            save_checkpoint(self._checkpoint(model, preprocessing, state), best_path(self.out))
        for epoch in range(done, epochs):
            started = time.monotonic()
            rng = np.random.default_rng([self.options.seed, PHASES.index(phase), epoch])
            loss = epoch_fn(model, preprocessing, rng, epoch, epochs, cache)
            history.append(round(loss, 6))
            state["train_seconds"] = state.get("train_seconds", 0.0) + time.monotonic() - started
            self._validate(model, preprocessing, state, phase, 1.0 - epoch / epochs, held_out)
            state["epochs_done"][phase] = epoch + 1
            if self.loss_scale.dynamic:
                state["loss_scale"] = self.loss_scale.record()
            checkpoint = self._checkpoint(model, preprocessing, state)
            save_checkpoint(checkpoint, partial_path(self.out))
            if self._best_epoch(state, phase) == epoch + 1:
                save_checkpoint(checkpoint, best_path(self.out))
            if self.progress is not None:
                self.progress.update(task, advance=1, status=f"loss {loss:.4f}")

    def _best_epoch(self, state: dict[str, Any], phase: str) -> int | None:
        """The phase's best epoch so far where ``keep="best"`` asks for it (else None)."""
        if self.options.keep != "best":
            return None
        return best_epoch(phase, state.get("validation_history", {}).get(phase, {}))

    def _keep_best(
        self, model: PSICNet, preprocessing: Preprocessing, state: dict[str, Any], phase: str
    ) -> None:
        """End the phase with its best epoch's weights (``keep="best"``): the next phase
        learns from them and the thresholds are chosen on them. Recorded in the state as
        ``kept_epochs``; where every score was not finite, the last epoch is kept."""
        if self.options.keep != "best":
            return
        done = state["epochs_done"].get(phase, 0)
        kept = state.setdefault("kept_epochs", {})
        if not done or phase in kept:
            return
        best = self._best_epoch(state, phase) or done
        if best != done:
            held_path = best_path(self.out)
            held = load_checkpoint(held_path) if held_path.exists() else None
            if held is None or held.training.get("epochs_done", {}).get(phase) != best:
                raise PsicbatchError(
                    f"{held_path}: {'does not hold' if held else 'is gone, and with it'} "
                    f"{phase} epoch {best}, the best (rerun without --resume)"
                )
            model.load_state_dict(held.state_dict)
        kept[phase] = best
        save_checkpoint(self._checkpoint(model, preprocessing, state), partial_path(self.out))
        best_path(self.out).unlink(missing_ok=True)

    def _held_out_inputs(
        self, model: PSICNet, preprocessing: Preprocessing, phase: str
    ) -> tuple[torch.Tensor, ...]:
        """The frozen network's outputs for the validation images, which step 2 scores
        every epoch (none for the other phases, or without validation)."""
        if self.validation is None or phase != "classification":
            return ()
        return self._frozen_outputs(model, preprocessing, self.validation.data.images, copies=1)

    def _validate(
        self,
        model: PSICNet,
        preprocessing: Preprocessing,
        state: dict[str, Any],
        phase: str,
        mix: float,
        held_out: tuple[torch.Tensor, ...],
    ) -> None:
        """Score the epoch just trained on the validation images, into the record (and
        its time apart from the training's)."""
        if self.validation is None:
            return
        started = time.monotonic()
        if phase == "segmentation":
            scores = self.validation.segmentation(model, preprocessing)
        elif phase == "classification":
            scores = self.validation.classification(model, held_out)
        else:  # end to end: eq. (1) at the mix the epoch trained with
            scores = self.validation.end_to_end(model, preprocessing, mix)
        measures = state.setdefault("validation_history", {}).setdefault(phase, {})
        for measure, value in scores.items():
            measures.setdefault(measure, []).append(round(value, 6))
        state["validation_seconds"] = (
            state.get("validation_seconds", 0.0) + time.monotonic() - started
        )

    def _task(self, description: str, total: int, completed: int) -> Any:
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, completed=completed, status="")

    def _batches(self, order: np.ndarray, batch_size: int) -> list[np.ndarray]:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def _inputs(
        self, index: np.ndarray, preprocessing: Preprocessing, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Pixels go up as they are (a quarter of float32's bytes) and are normalised where
        # the model runs; normalised before flipping, since torch flips no uint16.
        images = self._lit(self.data.images[index].to(self.device), preprocessing, rng)
        masks = self.masks[index].to(self.device)
        if self.options.augment:
            images, masks = random_flips(images, masks, rng)
        return images, masks

    def _lit(
        self, pixels: torch.Tensor, preprocessing: Preprocessing, rng: np.random.Generator | None
    ) -> torch.Tensor:
        """Network input of decoded pixels, each image under its own random light where
        ``--brightness`` asks for it (``rng``; None: as they are)."""
        if self.options.brightness and rng is not None:
            pixels = random_gains(pixels, self.options.brightness, preprocessing.max_value, rng)
        return normalize(pixels, preprocessing)

    def _sgd_epoch(
        self,
        parameters: list[torch.nn.Parameter],
        batches: list[np.ndarray],
        base_lr: float,
        epoch: int,
        epochs: int,
        batch_loss: Any,
    ) -> float:
        """One pass of plain SGD with the decaying learning rate; returns the mean loss."""
        losses = []
        for step, index in enumerate(batches):
            raise_if_stopped()  # a stop that the code it interrupted swallowed
            lr = _poly_lr(base_lr, epoch * len(batches) + step, epochs * len(batches))
            loss = batch_loss(index)
            grads = self.loss_scale.gradients(loss, parameters)
            if grads is not None:  # None: fp16 gradients overflowed, the step is skipped
                _sgd_step(parameters, grads, lr)
            losses.append(loss.item())
        return float(np.mean(losses))

    def _segmentation_epoch(self, model, preprocessing, rng, epoch, epochs, cache) -> float:
        model.train()

        def batch_loss(index: np.ndarray) -> torch.Tensor:
            images, masks = self._inputs(index, preprocessing, rng)
            with autocast(self.device, self.precision):
                _, seg_logits = model.segment(images)
            height, width = masks.shape[-2:]
            return segmentation_loss(
                seg_logits[..., :height, :width],
                masks,
                self.options.alpha_cap,
                self.options.dice_weight,
            )

        order = balanced_order(self.data.labels, rng, among=self.mask_known)
        batches = self._batches(order, self.options.batch_size)
        return self._sgd_epoch(
            model.segmentation_parameters(), batches, self.options.seg_lr, epoch, epochs, batch_loss
        )

    def _frozen_outputs(
        self,
        model: PSICNet,
        preprocessing: Preprocessing,
        pixels: torch.Tensor | None = None,
        copies: int | None = None,
    ) -> tuple:
        """What the classifier's trained layers see of every image (``Classifier.inputs``;
        of ``pixels``, the training images unless given), from the frozen network:
        computed once for all classification epochs, as each image is and, with
        ``--brightness``, under LIT_COPIES random lights more (the first axis), of which
        each epoch draws one per image."""
        model.eval()
        pixels = self.data.images if pixels is None else pixels
        count = len(pixels)
        if copies is None:
            copies = 1 + (LIT_COPIES if self.options.brightness else 0)
        rng = np.random.default_rng([self.options.seed, len(PHASES)])  # the same on resume
        cache: tuple[torch.Tensor, ...] = ()
        with torch.no_grad():
            for copy in range(copies):
                for start in range(0, count, self.options.batch_size):
                    batch = pixels[start : start + self.options.batch_size]
                    images = self._lit(batch.to(self.device), preprocessing, rng if copy else None)
                    with autocast(self.device, self.precision):
                        deep, seg = model.segment(images)
                        outputs = model.classifier.inputs(deep, seg)
                    # Written in place: joining the batches' parts at the end would hold
                    # the whole cache twice at once, the training's peak.
                    cache = cache or tuple(
                        o.new_empty((copies, count, *o.shape[1:])) for o in outputs
                    )
                    for held, output in zip(cache, outputs, strict=True):
                        held[copy, start : start + len(batch)] = output
        return cache

    def _classification_epoch(self, model, preprocessing, rng, epoch, epochs, cache) -> float:
        pooled_all, stats_all = cache
        model.eval()
        model.classifier.train()
        labels = self.data.labels.float().to(self.device)
        pos_weight = defect_weight(labels)
        copies = len(pooled_all)

        def batch_loss(index: np.ndarray) -> torch.Tensor:
            lit = rng.integers(0, copies, len(index)) if copies > 1 else np.zeros_like(index)
            with autocast(self.device, self.precision):
                pooled, stats = pooled_all[lit, index], stats_all[lit, index]
                logits = model.classifier.head(pooled, stats).squeeze(1)
            return F.binary_cross_entropy_with_logits(
                logits.float(), labels[index], pos_weight=pos_weight
            )

        batches = self._batches(rng.permutation(len(labels)), 4 * self.options.batch_size)
        return self._sgd_epoch(
            list(model.classifier.parameters()),
            batches,
            self.options.cls_lr,
            epoch,
            epochs,
            batch_loss,
        )

    def _end_to_end_epoch(self, model, preprocessing, rng, epoch, epochs, cache) -> float:
        model.train()
        mix = 1.0 - epoch / epochs  # lambda of eq. (1)

        def batch_loss(index: np.ndarray) -> torch.Tensor:
            images, masks = self._inputs(index, preprocessing, rng)
            labels = self.data.labels[index].float().to(self.device)
            with autocast(self.device, self.precision):
                seg_logits, cls_logits = model(images)
            seg_loss = segmentation_loss(
                seg_logits, masks, self.options.alpha_cap, self.options.dice_weight
            )
            cls_loss = F.binary_cross_entropy_with_logits(cls_logits.float().squeeze(1), labels)
            return mix * seg_loss + self.options.delta * (1 - mix) * cls_loss

        batches = self._batches(balanced_order(self.data.labels, rng), self.options.batch_size)
        return self._sgd_epoch(
            list(model.parameters()), batches, self.options.seg_lr, epoch, epochs, batch_loss
        )

    def _choose_thresholds(self, model: PSICNet, preprocessing: Preprocessing) -> Thresholds:
        """Thresholds on the training images, or (``thresholds_on="validation"``) on the
        held-out ones, on which the network is less sure than on those it learnt: best F1
        per image; per pixel, see ``pixel_threshold``."""
        data = self.data
        if self.options.thresholds_on == "validation" and self.validation is not None:
            data = self.validation.data
        mask_known = data.masks_known()
        count = len(data.images)
        image_probs = torch.empty(count)
        # Per image, over HISTOGRAM_BINS bins; filled in place: thousands of small tensors
        # kept in a list, allocated between each batch's large freed ones, fragment the
        # heap (RSS grew by up to 909 MiB over 3,240 tiles;
        # benchmarks/results/train-memory-avx512/).
        defect_hists = torch.empty(count, HISTOGRAM_BINS)
        background_hists = torch.empty(count, HISTOGRAM_BINS)
        for index, probs, seg in predict_batches(
            model,
            data.images,
            preprocessing,
            self.options.batch_size,
            self.device,
            self.precision,
        ):
            image_probs[index] = probs
            masks = data.masks[index]  # thresholds are judged on the undilated labels
            rows = range(index.start, index.stop)
            for row, image_seg, mask in zip(rows, seg, masks, strict=True):
                if mask_known[row]:  # an unknown mask counts for no pixel
                    defect_hists[row], background_hists[row] = pixel_histograms(image_seg, mask)
                else:
                    defect_hists[row], background_hists[row] = 0, 0
        segmentation = choose_pixel_threshold(
            defect_hists, background_hists, self.options.pixel_threshold
        )
        classification = best_f1_threshold(data.labels.numpy(), image_probs.numpy())
        return Thresholds(classification=classification, segmentation=segmentation)

    def _checkpoint(
        self,
        model: PSICNet,
        preprocessing: Preprocessing,
        state: dict[str, Any],
        thresholds: Thresholds | None = None,
    ) -> Checkpoint:
        return Checkpoint.from_model(model, preprocessing, thresholds, dict(state))


def _sgd_step(
    parameters: list[torch.nn.Parameter], grads: list[torch.Tensor | None], lr: float
) -> None:
    """Plain SGD without momentum (the paper's optimiser): p <- p - lr * grad."""
    with torch.no_grad():
        for parameter, grad in zip(parameters, grads, strict=True):
            if grad is not None:
                parameter.add_(grad, alpha=-lr)
