"""Where weights and data come from: local paths, hub ids, fsspec URLs (built-in names: :mod:`srpo.published`).

Every loader in the library goes through :func:`resolve_local`, so that ``s3://bucket/model``
and ``/data/model`` and ``hf-user/model`` behave the same way downstream: they become a local
path (remote files and folders are mirrored into a cache directory first, again whenever the
remote source changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

def cache_dir() -> Path:
    """Root of the library's cache: ``$SRPO_CACHE`` or ``~/.cache/srpo``."""
    root = Path(os.environ.get("SRPO_CACHE", Path.home() / ".cache" / "srpo"))
    root.mkdir(parents=True, exist_ok=True)
    return root


FILE_SCHEME = "file://"


def strip_file_scheme(location: str) -> str:
    """A local path written as a URL (``file:///data/x``) as the path (``/data/x``); others unchanged."""
    return location[len(FILE_SCHEME):] if location.startswith(FILE_SCHEME) else location


def is_url(location: str) -> bool:
    """True for fsspec URLs such as ``s3://b/k`` or ``gcs://...`` (not ``file://``)."""
    return "://" in location and not location.startswith(FILE_SCHEME)


def resolve_local(location: str, *, must_exist: bool = True) -> Path:
    """Return a local path for ``location``, mirroring fsspec URLs into the cache.

    Local paths are returned as they are; a missing one raises ``FileNotFoundError`` that names
    the path. URLs are mirrored into ``cache_dir()/remote/<hash>/`` and downloaded again only
    when the source changed (its files' sizes, ETags or modification times); see
    :func:`_mirror_remote`.
    """
    location = strip_file_scheme(location)
    if not is_url(location):
        path = Path(location).expanduser()
        if must_exist and not path.exists():
            raise FileNotFoundError(f"{location!r} does not exist: give an existing local path "
                                    "or an fsspec URL (s3://bucket/key)")
        return path
    return _mirror_remote(location)


# Fields of an fsspec ``info()`` entry that change when the object is rewritten: ETags and
# checksums (S3, GCS, Azure, HTTP headers, the Hugging Face hub's blob id), generations and version
# ids, modification/creation times (local, memory, SFTP...). Any one of them, with the size, tells
# a changed source from an unchanged one.
_CHANGE_MARKS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5", "Content-MD5", "Digest", "blob_id",
                 "generation", "VersionId", "version_id", "LastModified", "last_modified", "Last-Modified",
                 "mtime", "updated", "modified", "created")


def _mirror_remote(url: str) -> Path:
    """Local copy of the file or folder at ``url``, downloaded again only when the source changed.

    Each URL has a slot ``cache_dir()/remote/<url hash>/`` holding one version folder named after
    the source's fingerprint (:func:`_remote_fingerprint`): an unchanged source (model weights) is
    reused, a changed one (a rewritten prompt file, an annotation folder raters added to) is
    downloaded afresh; the version before it is kept for readers that may still hold it, older
    ones are removed. Processes mirroring the same URL at once (one per GPU) take turns on a lock:
    the first downloads, the others wait and reuse its copy. When the source cannot be asked
    (network or credentials), the newest complete copy is used, with a warning.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "root"
    slot = _url_slot(url)
    with _exclusive_lock(slot.with_name(f"{slot.name}.lock")):  # the fingerprint and the copy agree
        try:
            info = _remote_info(fs, path, url)
            fingerprint = _remote_fingerprint(fs, path, info)
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - any transport or credential error: offline reuse
            cached = _newest_version(slot, name)
            if cached is None:
                raise
            log.warning("cannot reach %s (%s): using the copy mirrored at %s", url, err, cached)
            return cached / name
        # Without a fingerprint the source may have changed unseen: download again, every time.
        version = slot / (_short_hash(fingerprint) if fingerprint is not None else "unversioned")
        if fingerprint is None or not version.is_dir():
            with atomic_directory(version) as tmp:  # appears complete, or not at all
                _download(fs, path, info, tmp / name)
        _remove_old_versions(slot, keep=version)
    return version / name


def _versions(slot: Path) -> list[Path]:
    """The completed version folders in ``slot`` (not downloads in progress), newest first."""
    if not slot.is_dir():
        return []
    versions = [v for v in slot.iterdir() if v.is_dir() and not v.name.startswith(".")]
    return sorted(versions, key=lambda v: v.stat().st_mtime, reverse=True)


def _newest_version(slot: Path, name: str) -> Path | None:
    """The most recently completed version folder in ``slot`` that holds ``name``, if any."""
    return next((v for v in _versions(slot) if (v / name).exists()), None)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _url_slot(url: str) -> Path:
    """``cache_dir()/remote/<hash of url>/``: the folder that holds the mirrored versions of ``url``."""
    return cache_dir() / "remote" / _short_hash(url)


def _remote_info(fs, path: str, url: str) -> dict:
    """fsspec's ``info`` of ``path``, fresh (not from this process's listing cache)."""
    fs.invalidate_cache(path)  # s3fs and others cache listings per process: they would hide changes
    try:
        return fs.info(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{url!r} does not exist (checked through fsspec): check the bucket, "
                                "the key and the credentials/endpoint") from err


def _remote_fingerprint(fs, path: str, info: dict) -> str | None:
    """The names, sizes and change marks of the file at ``path`` or of every file under it.

    ``None`` when some file has no change mark (see ``_CHANGE_MARKS``): the size alone cannot show
    a rewrite, so the caller downloads again on every resolve (correct, only slower).
    """
    is_folder = info.get("type") == "directory"
    entries = [entry for _, entry in sorted(fs.find(path, detail=True).items())] if is_folder else [info]
    marks = [_change_marks(entry) for entry in entries]
    if any(mark is None for mark in marks):
        return None
    return json.dumps({"folder": is_folder, "files": marks}, default=str)


def _change_marks(entry: dict) -> dict | None:
    """``name``, ``size`` and the change marks of one fsspec ``info`` entry; ``None`` without marks."""
    marks = {key: entry[key] for key in _CHANGE_MARKS if entry.get(key) is not None}
    return {"name": entry.get("name"), "size": entry.get("size"), **marks} if marks else None


def _download(fs, path: str, info: dict, local: Path) -> None:
    """Copy the remote file or folder ``path`` to ``local`` (a folder file by file)."""
    if info.get("type") == "directory":
        fs.get(path.rstrip("/") + "/", str(local), recursive=True)
    else:
        fs.get(path, str(local))


def _remove_old_versions(slot: Path, keep: Path) -> None:
    """Delete what ``slot`` holds but ``keep`` and the newest other version: older versions,
    leftovers of killed downloads. Called under the slot's lock, so no other process writes there."""
    previous = next((v for v in _versions(slot) if v != keep), None)
    for entry in slot.iterdir():
        if entry in (keep, previous):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (made if missing); other holders wait.

    The kernel drops the lock when its holder exits, even when killed, so a crashed download
    never blocks the next one. POSIX only (``fcntl``).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Create the folder ``target`` by running ``build(folder)``, unless it already exists.

    ``build`` writes into a temporary sibling folder that is renamed to ``target`` only when
    it finished, so a crash leaves nothing half-written (and a concurrent builder's result wins).
    """
    if target.is_dir():
        return target
    with atomic_directory(target, replace=False) as tmp:
        build(tmp)
    return target


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: First characters that make a spreadsheet read a cell as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A value as one CSV cell: floats to 6 significant digits, None empty, and text that a
    spreadsheet would run as a formula (a prompt such as ``=HYPERLINK(...)``) prefixed with ``'``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """``rows`` as CSV text with a header (``columns``, default the first row's keys; others dropped)."""
    import csv
    import io

    if columns is None:
        if not rows:
            return ""
        columns = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return buf.getvalue()


#: A Hugging Face hub id: ``org/name``, or a legacy canonical name without an org (``bert-base-uncased``).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def is_hub_id(location: str) -> bool:
    """True when ``location`` is spelled like a hub id (``org/name`` or ``name``), not like a path or URL."""
    return bool(_HUB_ID.fullmatch(location)) and not location.startswith((".", "/", "~"))


def resolve_model_location(location: str) -> Path | str:
    """What ``from_pretrained`` accepts: a local folder (``Path``; URLs mirrored) or a hub id (``str``).

    Existing local paths (also written ``file://...``) and fsspec URLs become local folders; a
    hub id that is not a local path is returned unchanged; anything else raises ``FileNotFoundError``.
    """
    if is_url(location) or Path(strip_file_scheme(location)).expanduser().exists():
        return resolve_local(location)
    if is_hub_id(location):
        return location
    raise FileNotFoundError(f"model location {location!r} does not exist: give a local folder, "
                            "an fsspec URL (s3://bucket/prefix), a hub id (org/name) or a built-in "
                            "name such as 'builtin:tiny-flux'")

