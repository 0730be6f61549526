"""A fixed probe set captured from a Keras training run: :class:`KerasProbe`, a ``keras.callbacks.Callback``.

>>> probe = KerasProbe((x_test[:2000], y_test[:2000]), "runs/timeline.zarr")
>>> model.fit(x_train, y_train, epochs=10, callbacks=[probe])    # step 0, then every epoch
>>> probe.capture(model, step=1234, epoch=3)                      # or by hand, in any loop
"""

from __future__ import annotations

import os
from typing import Any

import keras

from nnsig_core.capture.probe import (
    DEFAULT_PREFIX,
    Probe,
    Schedule,
    adapter_options,
    epoch_progress,
    row_settings,
)
from nnsig_core.store import ActivationStore

from .adapter import KerasAdapter


class KerasProbe(keras.callbacks.Callback):
    """Capture a fixed probe set at checkpoints of ``model.fit`` (or of any loop).

    Parameters
    ----------
    data : (X, y), mapping of arrays, or iterable of batches
        The probe set; the same samples at every checkpoint.
    store : ActivationStore, path or URL
        The store of the timeline, one split per checkpoint.
    layers, pool, layout
        As for :class:`~nnsig_keras.KerasAdapter`.
    every_n_epochs : int or None
        Capture after every N epochs (None: never at epoch ends).
    every_n_steps : int or None
        Capture after every N training batches.
    at_start : bool
        Capture before the first step (step 0).
    prefix : str
        Split names are ``<prefix>_<step>``.
    **options
        :class:`~nnsig_keras.KerasAdapter`'s other options (``mask``,
        ``token_key``, ``input_shape``...) go to the adapter; the rest to
        :class:`~nnsig_core.capture.Probe`.

    Attributes
    ----------
    probe : nnsig_core.capture.Probe
        The framework-neutral probe.
    step : int
        Training batches seen (plus ``initial_step``).
    """

    def __init__(self, data: Any, store: ActivationStore | str | os.PathLike[str], *,
                 layers: Any = None, pool: Any = "auto", layout: Any = None,
                 every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 at_start: bool = True, initial_step: int = 0,
                 prefix: str = DEFAULT_PREFIX, **options: Any) -> None:
        super().__init__()
        self.schedule = Schedule(every_n_epochs, every_n_steps, at_start)
        self.layers, self.pool, self.layout = layers, pool, layout
        self.step = int(initial_step)
        self.adapter_options = adapter_options(KerasAdapter, options)
        settings = row_settings(layers, pool, layout, self.adapter_options)
        self.probe = Probe(data, store, make_adapter=self._make_adapter, prefix=prefix,
                           settings=settings, **options)

    def _make_adapter(self, model: Any) -> KerasAdapter:
        return KerasAdapter(model, layers=self.layers, pool=self.pool, layout=self.layout,
                            **self.adapter_options)

    @property
    def timings(self) -> list[float]:
        """Seconds taken by each capture (see :class:`~nnsig_core.capture.Probe`)."""
        return self.probe.timings

    def capture(self, model: Any, *, step: int, epoch: int | float | None = None,
                **extra: Any) -> str | None:
        """Capture the probe set through ``model`` now (see :meth:`Probe.capture`)."""
        return self.probe.capture(model, step=step, epoch=epoch, **extra)

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints in the store, in step order."""
        return self.probe.checkpoints()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.schedule.at_start and self.step == 0:
            self.probe.capture(self.model, step=0, epoch=0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.schedule.step_due(self.step):
            self.probe.capture(self.model, step=self.step, epoch=epoch_progress(
                self._epochs_before, batch + 1, (self.params or {}).get("steps")))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Epochs done before this one: counted on across fit() calls (each numbers its own
        # from 0, or from initial_epoch).
        self._epochs_before = max(self._epochs_done, epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs_done = done = self._epochs_before + 1
        if self.schedule.epoch_due(done):
            extra = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            self.probe.capture(self.model, step=self.step, epoch=done, logs=extra)

    _epochs_before: int = 0
    _epochs_done: int = 0
