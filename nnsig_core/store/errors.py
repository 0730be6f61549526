"""Exceptions about stores, splits and layers."""

from __future__ import annotations


class StoreError(ValueError):
    """A store, split or layer is missing, malformed or incompatible."""


class IncompleteStoreError(StoreError):
    """The split's capture was interrupted; resume it before analysing it."""


#: Packages whose exceptions come from the network or a storage service's SDK.
REMOTE_PACKAGES = ("botocore", "aiobotocore", "aiohttp", "google", "gcsfs", "adlfs", "s3fs")


def unreachable(location: str, exc: BaseException, what: str) -> StoreError | None:
    """The error to raise when the store at ``location`` failed to ``what`` (e.g. "write
    s3://b/run.zarr/train/zarr.json") with ``exc``, a network or SDK error; None for others."""
    if not (isinstance(exc, (ConnectionError, TimeoutError))
            or type(exc).__module__.startswith(REMOTE_PACKAGES)):
        return None
    return StoreError(f"The store {location} did not answer when asked to {what} "
                      f"({type(exc).__name__}: {exc}): its endpoint is down or unreachable. Check "
                      "the endpoint and the network; once it answers, capture(..., resume=True) "
                      "continues an interrupted capture from the chunks written (nothing written "
                      "is lost), and a save can be run again.")
