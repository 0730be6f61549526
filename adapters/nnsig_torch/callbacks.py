"""Lightning and Hugging Face ``Trainer`` callbacks that capture a
:class:`~nnsig_torch.probe.TorchProbe` at checkpoints, on the main process only; each
imports its framework when called."""

from __future__ import annotations

import functools
import math
from typing import Any

from nnsig_core.capture.probe import Schedule, epoch_progress

from .probe import TorchProbe


@functools.lru_cache(maxsize=1)
def _lightning_class() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as e:
            raise ImportError(
                "lightning_callback needs Lightning: pip install 'nnsig[lightning]' "
                "(or pip install lightning)"
            ) from e

    class NnsigProbeCallback(Callback):
        """Captures an nnsig probe set at checkpoints of a Lightning training run."""

        def __init__(self, probe: TorchProbe, schedule: Schedule) -> None:
            super().__init__()
            self.probe, self.schedule = probe, schedule

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if self.schedule.at_start and trainer.is_global_zero and trainer.global_step == 0:
                self.probe.capture(pl_module, step=0, epoch=0)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            if trainer.is_global_zero and self.schedule.step_due(trainer.global_step):
                # Epochs done, as at an epoch's end (current_epoch counts from 0).
                self.probe.capture(pl_module, step=trainer.global_step, epoch=epoch_progress(
                    trainer.current_epoch, batch_idx + 1, trainer.num_training_batches))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            done = trainer.current_epoch + 1
            if trainer.is_global_zero and self.schedule.epoch_due(done):
                self.probe.capture(pl_module, step=trainer.global_step, epoch=done)

    return NnsigProbeCallback


@functools.lru_cache(maxsize=1)
def _hf_class() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as e:
        raise ImportError(
            "hf_callback needs transformers: pip install 'nnsig[transformers]'"
        ) from e

    class NnsigProbeTrainerCallback(TrainerCallback):
        """Captures an nnsig probe set at checkpoints of a Hugging Face ``Trainer`` run."""

        def __init__(self, probe: TorchProbe, schedule: Schedule) -> None:
            self.probe, self.schedule = probe, schedule

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                           **kwargs: Any) -> None:
            if (self.schedule.at_start and model is not None and state.is_world_process_zero
                    and state.global_step == 0):
                self.probe.capture(model, step=0, epoch=0)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                        **kwargs: Any) -> None:
            if (model is not None and state.is_world_process_zero
                    and self.schedule.step_due(state.global_step)):
                self.probe.capture(model, step=state.global_step,
                                   epoch=epoch_progress(state.epoch or 0, 0, None))

        def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None,
                         **kwargs: Any) -> None:
            # state.epoch is fractional where max_steps stopped training mid-epoch (1.5):
            # recorded as it is; the schedule counts the whole epochs done.
            epoch = epoch_progress(state.epoch or 0, 0, None)
            if (model is not None and state.is_world_process_zero
                    and self.schedule.epoch_due(math.floor(epoch))):
                self.probe.capture(model, step=state.global_step, epoch=epoch)

    return NnsigProbeTrainerCallback


def lightning_callback(probe: TorchProbe, *, every_n_epochs: int | None = 1,
                       every_n_steps: int | None = None, at_start: bool = True) -> Any:
    """A Lightning callback that captures ``probe`` at checkpoints of ``Trainer.fit``.

    Parameters
    ----------
    probe : TorchProbe
    every_n_epochs : int or None
        Capture after every N training epochs (None: never at epoch ends).
    every_n_steps : int or None
        Capture after every N optimiser steps.
    at_start : bool
        Capture before the first step (step 0).

    Returns
    -------
    lightning.pytorch.Callback
        For ``Trainer(callbacks=[...])``.
    """
    return _lightning_class()(probe, Schedule(every_n_epochs, every_n_steps, at_start))


def hf_callback(probe: TorchProbe, *, every_n_epochs: int | None = 1,
                every_n_steps: int | None = None, at_start: bool = True) -> Any:
    """A Hugging Face ``TrainerCallback`` that captures ``probe`` at checkpoints.

    Parameters
    ----------
    probe : TorchProbe
        Its data is what the model takes (dict batches for a transformers model).
    every_n_epochs, every_n_steps, at_start
        As for :func:`lightning_callback`.

    Returns
    -------
    transformers.TrainerCallback
        For ``Trainer(callbacks=[...])`` or ``trainer.add_callback(...)``.
    """
    return _hf_class()(probe, Schedule(every_n_epochs, every_n_steps, at_start))
