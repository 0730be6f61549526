"""The Keras zoo: ``keras.applications`` with ``weights=None``, captured with their default selection.

For each application the test checks the default selection (the merges of
paths, or the activation after each, at most 12, evenly spread; see
``nnsig_keras._model.default_selection``), the pooled shapes (channels last,
averaged over the positions), and the captured values against a plain Keras
model over the same tensors, pooled by hand. Keras runs on the torch backend.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")

from nnsig_keras import KerasAdapter  # noqa: E402

ATOL = 2e-4


@dataclass
class App:
    """One application and what its default capture must be."""

    name: str
    size: int
    count: int
    first: str | None  # None: auto-generated names, which depend on what was built before
    last: str | None
    kind: tuple[str, ...]  # class names of the captured layers or operations
    slow: bool = False


MERGE = ("Add", "Concatenate")
ZOO: dict[str, App] = {
    "keras.ResNet50": App("ResNet50", 32, 12, "conv2_block1_out", "conv5_block3_out",
                          ("Activation",), slow=True),
    "keras.ResNet50V2": App("ResNet50V2", 32, 12, "conv2_block1_out", "conv5_block3_out",
                            ("Add",), slow=True),
    "keras.MobileNetV2": App("MobileNetV2", 32, 10, "block_2_add", "block_15_add", ("Add",),
                             slow=True),
    "keras.MobileNetV3Small": App("MobileNetV3Small", 32, 6, "expanded_conv_2_add",
                                  "expanded_conv_10_add", ("Add",), slow=True),
    "keras.MobileNet": App("MobileNet", 32, 12, None, None,
                           ("Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU",
                            "GlobalAveragePooling2D")),
    "keras.DenseNet121": App("DenseNet121", 32, 12, "conv2_block1_concat",
                             "conv5_block16_concat", ("Concatenate",), slow=True),
    "keras.VGG16": App("VGG16", 32, 12, "block1_conv1", "fc2",
                       ("Conv2D", "MaxPooling2D", "Dense"), slow=True),
    "keras.EfficientNetB0": App("EfficientNetB0", 32, 9, "block2b_add", "block6d_add", ("Add",),
                                slow=True),
    "keras.Xception": App("Xception", 71, 12, None, None, MERGE, slow=True),
    "keras.InceptionV3": App("InceptionV3", 75, 12, "mixed0", "mixed10", ("Concatenate",),
                             slow=True),
    "keras.ConvNeXtTiny": App("ConvNeXtTiny", 32, 12, None, None, MERGE, slow=True),
}


def reference(model: Any, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The named layers' (or operations') outputs through a plain Keras model, pooled by hand."""
    ops = {op.name: op for op in model.operations}
    probe = keras.Model(model.inputs, [ops[n].output for n in names])
    values = probe.predict_on_batch(x)
    values = values if isinstance(values, (list, tuple)) else [values]
    out = {}
    for n, v in zip(names, values, strict=True):
        v = np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)
        out[n] = v.mean(axis=tuple(range(1, v.ndim - 1))) if v.ndim > 2 else v
    return out


def _params() -> list[Any]:
    return [pytest.param(k, marks=[pytest.mark.slow] if a.slow else [], id=k)
            for k, a in ZOO.items()]


@pytest.mark.parametrize("key", _params())
def test_keras_application(key: str) -> None:
    app = ZOO[key]
    keras.utils.set_random_seed(0)
    build: Callable[..., Any] = getattr(keras.applications, app.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(weights=None, input_shape=(app.size, app.size, 3), classes=10)
    adapter = KerasAdapter(model)
    rng = np.random.default_rng(0)
    for n in (2, 3):
        x = rng.normal(size=(n, app.size, app.size, 3)).astype("float32")
        _, acts = adapter.run(x)
        names = list(acts)
        assert len(names) == app.count <= 12  # never hundreds
        if app.first is not None:
            assert names[0] == app.first and names[-1] == app.last
        ops = {op.name: op for op in model.operations}
        assert {type(ops[k]).__name__ for k in names} <= set(app.kind), names
        ref = reference(model, names, x)
        for name in names:
            assert acts[name].shape == (n, ref[name].shape[1])
            np.testing.assert_allclose(acts[name], ref[name], atol=ATOL, rtol=1e-4,
                                       err_msg=name)
    layers = adapter.model_summary()["layers"]
    assert all(e["layout"] == "NHWC" and e["pool"] == "mean" for e in layers
               if len(e["source_shape"]) == 3)
