"""Where weights and data come from: local paths, hub ids, fsspec URLs, built-in tiny models.

Every loader in the library goes through :func:`resolve_local`, so that ``s3://bucket/model``
and ``/data/model`` and ``hf-user/model`` behave the same way downstream: they become a local
path (remote folders are mirrored file by file into a cache directory first).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BUILTIN_PREFIX = "builtin:"


def cache_dir() -> Path:
    """Root of the library's cache: ``$SRPO_CACHE`` or ``~/.cache/srpo``."""
    root = Path(os.environ.get("SRPO_CACHE", Path.home() / ".cache" / "srpo"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def is_url(location: str) -> bool:
    """True for fsspec URLs such as ``s3://b/k`` or ``gcs://...`` (not ``file://``)."""
    return "://" in location and not location.startswith("file://")


def is_builtin(location: str) -> bool:
    return location.startswith(BUILTIN_PREFIX)


def resolve_local(location: str, *, must_exist: bool = True) -> Path:
    """Return a local path for ``location``, mirroring fsspec URLs into the cache.

    Local paths are returned as they are; a missing one raises ``FileNotFoundError`` that names
    the path. URLs are downloaded once into ``cache_dir()/remote/<hash>/`` (a completed download
    is marked, a partial one is discarded and redone).
    """
    if location.startswith("file://"):
        location = location[len("file://"):]
    if not is_url(location):
        path = Path(location).expanduser()
        if must_exist and not path.exists():
            raise FileNotFoundError(f"{location!r} does not exist: give an existing local path "
                                    "or an fsspec URL (s3://bucket/key)")
        return path
    return _mirror_remote(location)


def _mirror_remote(url: str) -> Path:
    import fsspec

    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "root"
    target = cache_dir() / "remote" / key / name
    done = target.parent / ".complete"
    if done.exists():
        return target
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url!r} does not exist (checked through fsspec): check the bucket, "
                                "the key and the credentials/endpoint")
    if target.parent.exists():
        shutil.rmtree(target.parent)  # a partial earlier download
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".download-"))
    try:
        local = tmp / name
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(local), recursive=True)
        else:
            fs.get(path, str(local))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
        done.touch()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def atomic_directory(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it becomes ``target``.

    On an exception the temporary folder is removed and ``target`` is left as it was, so a
    crash never leaves a half-written folder under the final name. With ``replace=False`` an
    existing ``target`` (for example one a concurrent builder finished first) is kept and the
    new folder discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        yield tmp
        old = None
        if target.exists():
            if not replace:
                return
            old = target.with_name(f".old-{tmp.name}")
            os.replace(target, old)  # moved aside, not deleted: `target` is missing only between two renames
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_location(location: str) -> str:
    """A string ``from_pretrained`` accepts: a local folder (URLs mirrored) or a hub id.

    Existing local paths and fsspec URLs become local folders; ``org/name`` that is not a local
    path is returned as a hub id; anything else that does not exist raises ``FileNotFoundError``.
    """
    if is_url(location) or location.startswith("file://"):
        return str(resolve_local(location))
    path = Path(location).expanduser()
    if path.exists():
        return str(path)
    if _HUB_ID.match(location) and not location.startswith((".", "/", "~")):
        return location
    raise FileNotFoundError(f"model location {location!r} does not exist: give a local folder, "
                            "an fsspec URL (s3://bucket/prefix), a hub id (org/name) or a built-in "
                            "name such as 'builtin:tiny-flux'")
