"""Shared fixtures: where MNIST is (and whether its absence is a skip or a failure), an
S3 server on loopback for the object-store tests, and a Dask cluster in this process."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Dask worker processes (LocalCluster(processes=True) here, `--scheduler local:N` in the
# commands these tests run) are forked from a fork server, as distributed's own test suite
# does, not spawned: the server (a fresh interpreter, none of this process's threads or
# state) imports Dask and NumPy once, and each worker starts without importing them again.
# Tasks still reach the workers pickled, as with spawn. The variable reaches subprocesses.
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD", "forkserver")

# Under pytest-xdist (`-n 2`: one test process per core) each process computes on one
# thread: torch's OpenMP, scikit-learn's and OpenBLAS's pools otherwise start a thread per
# core in every process, and with more threads than cores each OpenMP barrier spins while
# its partner waits for a core (a torchvision forward pass 10-30x slower measured so, two
# test processes on 2 busy cores). The variables reach torch and the libraries loaded
# later, and the commands the tests start; NumPy's OpenBLAS is already loaded (by zarr's
# pytest plugin), so its pool is set by threadpoolctl.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OMP_NUM_THREADS"]))


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("NNSIG_REQUIRE_MNIST"))


def find_mnist_root() -> Path | None:
    """The directory holding ``MNIST/raw`` (torchvision's layout), if any."""
    candidates = [os.environ.get("NNSIG_DATA"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """MNIST's root directory; skips when absent, fails in CI."""
    root = find_mnist_root()
    if root is None:
        msg = "MNIST not found: set NNSIG_DATA to the directory holding MNIST/raw"
        if _required():
            pytest.fail(msg + " (required in CI)")
        pytest.skip(msg)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto's ``ThreadedMotoServer``, as s3fs's own tests use) on
    127.0.0.1, one for the whole test run (started by the first test that needs it; each
    test gets a bucket of its own from ``s3``)."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """``(url of a store in a fresh bucket, storage_options)`` on the loopback S3 server."""
    s3fs = pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    bucket = f"nnsig-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return f"s3://{bucket}/run.zarr", options


@pytest.fixture(scope="session")
def client():
    """A Dask ``LocalCluster`` of two single-threaded workers in this process, one for the
    whole test run (started by the first test that needs it). It is not the default client:
    a test that means the active client says so (``with client.as_current():``), and no
    other test runs on it by accident."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        # A task that asks for its worker's client (get_client(), a distributed.Event) gets
        # this one: a worker otherwise creates its own, as the default client, and the
        # workers live in this process, so that every later test would run on the cluster.
        for worker in cluster.workers.values():
            worker._client = c
        yield c


@pytest.fixture(autouse=True)
def _no_default_dask_client_left(request):
    """A default Dask client left behind by a test makes later tests of this process (any
    order, any xdist worker) run on it by accident: say which test left it (a warning in
    the summary), so that the test can be fixed."""
    yield
    import sys

    if "distributed" not in sys.modules:
        return
    from distributed import default_client

    try:
        left = default_client()
    except ValueError:  # none
        return
    import warnings

    warnings.warn(f"{request.node.nodeid} left a default Dask client behind: {left}",
                  pytest.PytestWarning, stacklevel=1)


# The modules with the longest tests run first (`make test`'s `--dist worksteal` then gives
# each process a contiguous half of this order, and an idle process takes the end of the
# other's), so that no minute-long test starts last while the other process idles. Every
# other module keeps pytest's order; within a module the order is unchanged.
FIRST = ("test_typecheck.py", "test_zoo_keras.py", "test_zoo_torch.py", "test_report_data.py",
         "test_notebook.py", "test_docs.py", "test_example_mnist.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable


@pytest.fixture
def nnsig_from_a_terminal() -> list[str]:
    """The command line that starts ``nnsig`` as a terminal would: Ctrl-C delivered and
    handled, whatever this test process inherited. A test process may hold SIGINT blocked or
    ignored (an ignored signal stays ignored across exec, and Python then installs no
    handler), so a plain child of it would not stop on Ctrl-C."""
    terminal = ("import runpy, signal, sys; "
                "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
                "signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv = ['nnsig'] + sys.argv[1:]; "
                "runpy.run_module('nnsig_core', run_name='__main__')")
    return [sys.executable, "-c", terminal]
