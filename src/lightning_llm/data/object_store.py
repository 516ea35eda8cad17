"""Prepared folders in object storage (`s3://bucket/prefix`): what `prepare` uploads and training reads.

boto3 with the usual AWS settings (credentials, region, `AWS_ENDPOINT_URL` for an S3-compatible store such as
MinIO); the training chunks themselves are streamed by litdata, which reads the same settings.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from lightning_llm.errors import UserError

SCHEME = "s3://"
TIMEOUTS = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3}}  # never a hang


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(SCHEME)


def join(url: str, *names: str) -> str:
    return "/".join([url.rstrip("/"), *names])


def check_url(url: str) -> str:
    """`url` without a trailing slash; one error when it names no bucket or no folder in it."""
    bucket, _, key = url.removeprefix(SCHEME).partition("/")
    if not bucket or not key.strip("/"):
        raise UserError(f"{url} names no bucket and folder: write s3://<bucket>/<folder>")
    return url.rstrip("/")


def _bucket_and_key(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix(SCHEME).partition("/")
    return bucket, key


def _boto() -> tuple[Any, Any, tuple[type[Exception], ...]]:
    """boto3, botocore's Config and what they raise when the store refuses or cannot be reached (a failed
    upload is boto3's own type); or one error saying how to install them."""
    try:
        import boto3
        import boto3.exceptions
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise UserError("s3:// folders need boto3: pip install 'lightning-llm[stream]'") from None
    return boto3, Config, (BotoCoreError, ClientError, boto3.exceptions.Boto3Error)


def _client():
    boto3, config, _ = _boto()
    return boto3.client("s3", config=config(**TIMEOUTS))


def _failures() -> tuple[type[Exception], ...]:
    return _boto()[2]


def _storage_error(url: str, error: Exception) -> UserError:
    return UserError(
        f"{url}: object storage refused or could not be reached ({type(error).__name__}: "
        f"{' '.join(str(error).split())[:200]}); check the bucket, the credentials (AWS_PROFILE, "
        "AWS_ACCESS_KEY_ID ...) and AWS_ENDPOINT_URL for an S3-compatible store"
    )


def read_bytes(url: str) -> bytes | None:
    """The object at `url`, or None when there is none."""
    bucket, key = _bucket_and_key(url)
    try:
        return _client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except _failures() as error:
        if getattr(error, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise _storage_error(url, error) from None


def holds_objects(url: str) -> bool:
    """Whether any object lies under the folder `url`."""
    bucket, key = _bucket_and_key(url)
    prefix = key.rstrip("/") + "/" if key else ""
    try:
        return _client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0
    except _failures() as error:
        raise _storage_error(url, error) from None


def upload_folder(folder: Path, url: str, last: str) -> None:
    """Every file under `folder` to the folder `url`, the file named `last` after all others: a reader that
    sees it sees a whole folder."""
    client = _client()
    files = sorted((path for path in folder.rglob("*") if path.is_file()), key=lambda path: path.name == last)
    try:
        for path in files:
            bucket, key = _bucket_and_key(join(url, *path.relative_to(folder).parts))
            client.upload_file(str(path), bucket, key)
    except _failures() as error:
        raise UserError(
            f"{_storage_error(url, error)}. The upload stopped part way: {url} holds a partial folder without "
            f"its manifest; delete it (aws s3 rm --recursive {url}) before preparing it again"
        ) from None


def download(url: str, destination: Path) -> None:
    """The object at `url` into `destination`, whole or not at all (several processes may fetch it at once)."""
    bucket, key = _bucket_and_key(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(handle)
    try:
        _client().download_file(bucket, key, partial)
        os.replace(partial, destination)
    except _failures() as error:
        raise _storage_error(url, error) from None
    finally:
        Path(partial).unlink(missing_ok=True)
