"""nnsig walkthrough with Keras 3: what happens inside an MNIST multi-layer perceptron?

Trains the prototype's network (784-512-512-512-10, ReLU, softmax output, adam)
on MNIST with Keras 3 (any backend: KERAS_BACKEND, else torch or jax when
TensorFlow is absent),
captures the activations of its three hidden layers on the training and test
sets into an nnsig store, clusters each layer and writes the report.

    python examples/keras_mnist.py --data-root ../shared/data --epochs 3
    python examples/keras_mnist.py --train-classes 0-4 --test-classes 0-9   # unseen classes

MNIST is read from the four IDX files in ``<data-root>/MNIST/raw/``
(``train-images-idx3-ubyte`` and so on, optionally gzipped), the layout
torchvision uses. ``--data-root`` defaults to ``$NNSIG_DATA``, else
``~/.cache/nnsig/data``. Missing files are downloaded from public mirrors
when possible.

Exit status: 0 when everything ran, 2 when the analysis part of nnsig is not
available (the store is then written but not analysed), 1 on errors.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger("keras_mnist")

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CLASS_NAMES = [str(i) for i in range(10)]

#: Exit status when the store is written but the analysis modules cannot be imported.
EXIT_NO_ANALYSIS = 2


class DataError(RuntimeError):
    """The MNIST files are missing or unreadable."""


# ---------------------------------------------------------------------------- data
def default_data_root() -> Path:
    return Path(os.environ.get("NNSIG_DATA") or Path.home() / ".cache" / "nnsig" / "data")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array.

    The format: two zero bytes, a type code (``0x08`` for uint8), the number
    of dimensions, one big-endian uint32 per dimension, then the data.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX type code {data[2]:#x} is not supported (only uint8).")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: {len(data) - offset} data bytes for dimensions {dims} ({expected} expected); "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(raw: Path, name: str) -> Path | None:
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("Cannot create %s (%s); not downloading.", raw, exc)
        return None
    target = raw / f"{name}.gz"
    for mirror in MIRRORS:
        url = f"{mirror}{name}.gz"
        tmp = target.with_suffix(".gz.part")
        try:
            log.info("Downloading %s", url)
            with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            read_idx(tmp)  # check it before keeping it
            tmp.replace(target)
            return target
        except Exception as exc:  # network errors, HTTP errors, bad files
            log.warning("Could not download %s: %s", url, exc)
            tmp.unlink(missing_ok=True)
    return None


def load_mnist(
    root: str | os.PathLike[str], download: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load MNIST from ``<root>/MNIST/raw``: ``{"train": (X, y), "test": (X, y)}``, X uint8 (n, 28, 28)."""
    raw = Path(root).expanduser() / "MNIST" / "raw"
    out = {}
    for split, names in FILES.items():
        arrays = []
        for name in names:
            path = _find(raw, name) or (_download(raw, name) if download else None)
            if path is None:
                raise DataError(
                    f"MNIST file {name} not found in {raw} and could not be downloaded. Put the "
                    f"four IDX files ({', '.join(n for pair in FILES.values() for n in pair)}, "
                    f"optionally .gz) in {raw}, or pass --data-root DIR (or set NNSIG_DATA) to a "
                    "directory that has MNIST/raw/ in it."
                )
            arrays.append(read_idx(path))
        images, labels = arrays
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise DataError(f"MNIST {split}: {images.shape} images for {labels.shape} labels.")
        out[split] = (images, labels.astype(np.int64))
    return out


def parse_classes(text: str) -> list[int]:
    """``"0-9"``, ``"0-4"``, ``"1,3,5"``, ``"0-2,7"`` -> sorted list of digits (argparse type)."""
    from nnsig_core.cli.commands import parse_classes as parse

    try:
        classes = parse(text) or []
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if min(classes) < 0 or max(classes) > 9:
        raise argparse.ArgumentTypeError(f"classes must be digits 0-9, got {text!r}")
    return classes


def subset(
    x: np.ndarray, y: np.ndarray, classes: list[int], limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The samples of ``classes``, flattened to 784 floats in [0, 1], at most ``limit`` of them."""
    keep = np.flatnonzero(np.isin(y, classes))
    if limit is not None:
        keep = keep[:limit]
    return (x[keep].reshape(len(keep), -1).astype(np.float32) / 255.0), y[keep]


# ---------------------------------------------------------------------------- model
def build_model(hidden: int = 512, n_layers: int = 3):
    """The prototype's network: 784 - 512 - 512 - 512 - 10, ReLU, softmax output."""
    import keras

    return keras.Sequential(
        [keras.Input((784,), name="pixels")]
        + [
            keras.layers.Dense(hidden, activation="relu", name=f"fc{i + 1}")
            for i in range(n_layers)
        ]
        + [keras.layers.Dense(10, activation="softmax", name="output")],
        name="mnist_mlp",
    )


# ---------------------------------------------------------------------------- main
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train an MNIST MLP with Keras 3, capture its hidden layers with nnsig, "
        "cluster them and write the report.",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="directory holding MNIST/raw/ (default: $NNSIG_DATA or ~/.cache/nnsig/data)",
    )
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    p.add_argument(
        "--train-classes",
        type=parse_classes,
        default=parse_classes("0-9"),
        help="classes to train on and capture as 'train' (default 0-9)",
    )
    p.add_argument(
        "--test-classes",
        type=parse_classes,
        default=parse_classes("0-9"),
        help="classes to capture as 'test' (default 0-9)",
    )
    p.add_argument(
        "--max-train", type=int, default=None, help="use at most this many training samples"
    )
    p.add_argument("--max-test", type=int, default=None, help="use at most this many test samples")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--clusters", type=int, default=10, help="clusters per layer (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/keras_mnist"),
        help="output directory: store, report (default runs/keras_mnist)",
    )
    p.add_argument("--no-thumbnails", action="store_true", help="do not store input thumbnails")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the walkthrough; return the exit status (0, or 2 when the analysis is unavailable)."""
    args = make_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
        )
    for n in ("max_train", "max_test"):
        if getattr(args, n) is not None and getattr(args, n) < 1:
            log.error("--%s must be >= 1", n.replace("_", "-"))
            return 1

    # nnsig_keras before keras: with no backend configured and no TensorFlow, it picks torch or jax.
    from nnsig_keras import KerasAdapter  # isort: skip

    import keras

    import nnsig_core

    root = args.data_root or default_data_root()
    try:
        data = load_mnist(root, download=not args.no_download)
    except DataError as exc:
        log.error("%s", exc)
        return 1
    x_train, y_train = subset(*data["train"], args.train_classes, args.max_train)
    x_test, y_test = subset(*data["test"], args.test_classes, args.max_test)
    log.info(
        "MNIST from %s: %d training samples of classes %s, %d test samples of classes %s",
        root,
        len(y_train),
        args.train_classes,
        len(y_test),
        args.test_classes,
    )

    # -- train
    keras.utils.set_random_seed(args.seed)
    model = build_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=2 if args.progress else 0,
        shuffle=True,
    )
    log.info(
        "Trained %d epoch(s) with Keras %s (%s backend) in %.1f s",
        args.epochs,
        keras.__version__,
        keras.backend.backend(),
        time.perf_counter() - t0,
    )

    # -- capture
    args.out.mkdir(parents=True, exist_ok=True)
    store_path = args.out / "activations.zarr"
    adapter = KerasAdapter(model)  # fc1, fc2, fc3: every layer but the output layer
    accuracy = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        store = nnsig_core.capture(
            adapter,
            (x, y),
            store_path,
            split=split,
            batch_size=1000,
            class_names=CLASS_NAMES,
            keep_inputs=not args.no_thumbnails,
            overwrite=True,
            progress=args.progress,
        )
        predictions = np.asarray(store.predictions(split))
        accuracy[split] = float(np.mean(predictions == y)) if len(y) else float("nan")
        log.info("Captured %s: %d samples, accuracy %.4f", split, len(y), accuracy[split])

    # -- analyse and report
    try:
        SignatureAnalysis, write_report = _analysis_api()
    except ImportError as exc:
        log.error(
            "The store is written (%s), but the analysis part of nnsig is not available (%s): "
            "stopping before clustering and the report.",
            store_path,
            exc,
        )
        _summary(accuracy, store_path, None)
        return EXIT_NO_ANALYSIS
    store = nnsig_core.open_store(store_path, mode="a")
    analysis = SignatureAnalysis(n_clusters=args.clusters).fit(store, "train")
    analysis.save(store, "default", overwrite=True)  # the splits were just recaptured
    report_dir = args.out / "report"
    written = write_report(analysis, store, report_dir)
    index = Path(written) if isinstance(written, (str, os.PathLike)) else report_dir / "index.html"
    _summary(accuracy, store_path, index)
    return 0


def _analysis_api():
    """``(SignatureAnalysis, write_report)`` from nnsig_core (or its submodules, for older trees)."""
    try:
        from nnsig_core import SignatureAnalysis, write_report
    except ImportError:
        from nnsig_core.analysis import SignatureAnalysis
        from nnsig_core.report import write_report
    return SignatureAnalysis, write_report


def _summary(accuracy: dict[str, float], store_path: Path, report: Path | None) -> None:
    print()
    print("nnsig Keras MNIST walkthrough")
    for split, acc in accuracy.items():
        print(f"  {split:<5} accuracy  {acc:.4f}")
    print(f"  activations     {store_path}")
    print(
        f"  report          {report if report is not None else '(not written: analysis unavailable)'}"
    )


if __name__ == "__main__":
    sys.exit(main())
