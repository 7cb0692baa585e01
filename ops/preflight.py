"""Fail fast, with the fix in the message, when the active stack's artifact store cannot be used.

ZenML only finds out that an S3 endpoint is down or that the keys are wrong when the first step
writes its first output: after ~20 s of retries, in a traceback about a log file. This check
runs when a pipeline is compiled (before a run exists) and asks the store once, with short
timeouts and no retries:

    python -m ops.preflight          # check the active stack's artifact store

Only S3 stores (``flavor: s3``) are checked; other flavors pass. Code that compiles a pipeline
without running it (``ops.validate``) wraps the compilation in
``with artifact_store_check_skipped():`` so that it never contacts the store.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 20

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden",
                     "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}


_SKIP_CHECK: ContextVar[bool] = ContextVar("skip_artifact_store_check", default=False)


class ArtifactStoreUnavailable(RuntimeError):
    """The artifact store cannot be reached or refuses the configured credentials."""


@contextmanager
def artifact_store_check_skipped() -> Iterator[None]:
    """Inside this block :func:`check_artifact_store` does nothing: for compiling a pipeline that will not run.

    Only the current thread / task is affected, and the check is back on when the block ends.
    """
    token = _SKIP_CHECK.set(True)
    try:
        yield
    finally:
        _SKIP_CHECK.reset(token)


def _fix_credentials(store: Any) -> str:
    secret = getattr(store.config, "authentication_secret", None)
    if secret:
        return (f"update the ZenML secret '{secret}' with keys that the endpoint accepts: "
                f"`zenml secret update {secret} --aws_access_key_id=<key> --aws_secret_access_key=<secret>`")
    return ("set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an AWS profile) for this process, or reference a "
            f"ZenML secret: `zenml artifact-store update {store.name} --authentication_secret=<secret name>`")


def check_s3_store(store: Any) -> None:
    """One ``ListObjectsV2`` on the store's bucket; raises :class:`ArtifactStoreUnavailable`."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     NoCredentialsError, ReadTimeoutError)

    name, path = store.name, store.path
    client_kwargs = dict(store.config.client_kwargs or {})
    endpoint = client_kwargs.get("endpoint_url") or "the AWS default endpoint"
    where = f"artifact store '{name}' ({path} at {endpoint})"
    try:
        key, secret, token, region = store.get_credentials()
    except KeyError as err:  # the referenced ZenML secret does not exist
        secret_name = store.config.authentication_secret
        raise ArtifactStoreUnavailable(
            f"{where}: {err.args[0] if err.args else err}. Create it first: `zenml secret create {secret_name} "
            "--aws_access_key_id=<key> --aws_secret_access_key=<secret>`") from err
    if region and "region_name" not in client_kwargs:
        client_kwargs["region_name"] = region
    session = boto3.session.Session()  # a fresh one: boto3's default session caches the first credentials it found
    client = session.client("s3", aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token,
                            config=Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                                          retries={"max_attempts": 1}),
                            **client_kwargs)
    bucket, _, prefix = path.removeprefix("s3://").partition("/")
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as err:
        raise ArtifactStoreUnavailable(
            f"{where} cannot be reached: {err}. Start the S3 server (is it listening on that host and port?) or "
            f"point the store at the right one: `zenml artifact-store update {name} "
            "--client_kwargs='{\"endpoint_url\": \"http://HOST:PORT\"}'`") from err
    except NoCredentialsError as err:
        raise ArtifactStoreUnavailable(
            f"{where}: no S3 credentials were found. Fix: {_fix_credentials(store)}") from err
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _CREDENTIAL_CODES:
            raise ArtifactStoreUnavailable(
                f"{where} refused the credentials ({code}: {err.response['Error'].get('Message', '')}). "
                f"Fix: {_fix_credentials(store)}") from err
        if code == "NoSuchBucket":
            raise ArtifactStoreUnavailable(
                f"{where}: bucket '{bucket}' does not exist. Create it (e.g. `aws s3 mb s3://{bucket}"
                f"{' --endpoint-url ' + client_kwargs['endpoint_url'] if 'endpoint_url' in client_kwargs else ''}`) "
                "or register the store with an existing bucket") from err
        raise ArtifactStoreUnavailable(f"{where} answered with an error: {err}") from err
    except BotoCoreError as err:
        raise ArtifactStoreUnavailable(f"{where} cannot be used: {err}") from err


def check_artifact_store() -> None:
    """Check the active stack's artifact store (S3 only); raises :class:`ArtifactStoreUnavailable`.

    Does nothing inside :func:`artifact_store_check_skipped`.
    """
    if _SKIP_CHECK.get():
        return
    from zenml.client import Client

    store = Client().active_stack.artifact_store
    if store.flavor == "s3":
        check_s3_store(store)


def main(argv=None) -> int:
    """0 when the active stack's artifact store answers, else 1 with the reason and the fix."""
    parser = argparse.ArgumentParser(prog="python -m ops.preflight",
                                     description="Check that the active ZenML stack's artifact store (S3 only) "
                                                 "answers and accepts its credentials; takes no arguments.")
    parser.parse_args(argv)
    try:
        check_artifact_store()
    except ArtifactStoreUnavailable as err:
        print(f"error {err}")
        return 1
    print("ok    the active stack's artifact store answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
