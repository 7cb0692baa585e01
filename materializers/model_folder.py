"""ZenML materializer for :class:`srpo.artifacts.ModelFolder`: model directories, file by file.

ZenML's built-in Path materializer gzips one tarball, which is slow and doubles disk use for
multi-GB weights. This one copies each file as it is, streaming in chunks through
``zenml.io.fileio`` (so local and S3 artifact stores both work), and writes a manifest with
every file's relative path, size and SHA-256, computed while streaming. Layout of an artifact::

    <uri>/manifest.json          {"format_version", "kind", "files": [{"path", "size", "sha256"}]}
    <uri>/files/<relative path>  the folder's files, subfolders preserved

Loading copies the files into ``srpo.io.cache_dir()/artifacts/<key>/`` (a temporary folder
renamed into place once every file matched the manifest), and reuses that copy on later loads
when every file is still there with the right size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar

from zenml.artifact_stores.base_artifact_store import BaseArtifactStore
from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.logger import get_logger
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.metadata.metadata_types import MetadataType, StorageSize

from srpo.artifacts import ModelFolder
from srpo.io import cache_dir

logger = get_logger(__name__)

MANIFEST_NAME = "manifest.json"
FILES_DIR = "files"
MANIFEST_FORMAT_VERSION = 1
CHUNK_BYTES = 8 * 1024 * 1024


class ArtifactIntegrityError(ValueError):
    """A stored artifact file is missing, or its size or SHA-256 differs from the manifest."""


def stream_copy(src: BinaryIO, dst: BinaryIO) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` in chunks; return the byte count and the SHA-256 hex digest."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK_BYTES):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def manifest_digest(kind: str, files: list[dict[str, Any]]) -> str:
    """SHA-256 of the manifest's content (kind and every path/size/sha256), order-independent."""
    canonical = json.dumps({"kind": kind, "files": sorted(files, key=lambda f: f["path"])},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _safe_relative(path: str) -> PurePosixPath:
    """Reject manifest paths that would escape the target folder."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or ".." in rel.parts or "\\" in path:
        raise ArtifactIntegrityError(f"manifest entry {path!r} is not a safe relative path")
    return rel


class ModelFolderMaterializer(BaseMaterializer):
    """Stores a :class:`ModelFolder` uncompressed, file by file, with a SHA-256 manifest."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (ModelFolder,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def __init__(self, uri: str, artifact_store: BaseArtifactStore | None = None) -> None:
        super().__init__(uri, artifact_store)
        self._manifest: dict[str, Any] | None = None  # set by save(), read by metadata/content hash

    # ------------------------------------------------------------------------------ save

    def save(self, data: ModelFolder) -> None:
        """Copy every file of ``data.path`` into the artifact store and write the manifest last."""
        relative_paths = data.files()
        if not relative_paths:
            raise ValueError(f"model folder {str(data.path)!r} contains no files: nothing to store "
                             "(did the step write its model somewhere else?)")
        entries: list[dict[str, Any]] = []
        for rel in relative_paths:
            remote = self._remote_path(rel.as_posix())
            fileio.makedirs(os.path.dirname(remote))
            with open(data.path / rel, "rb") as src, fileio.open(remote, "wb") as dst:
                size, sha = stream_copy(src, dst)
            entries.append({"path": rel.as_posix(), "size": size, "sha256": sha})
        manifest = {"format_version": MANIFEST_FORMAT_VERSION, "kind": data.kind, "files": entries,
                    "total_size": sum(e["size"] for e in entries)}
        with fileio.open(os.path.join(self.uri, MANIFEST_NAME), "wb") as f:
            f.write(json.dumps(manifest, indent=1).encode())
        self._manifest = manifest
        logger.debug("stored model folder %s (%d files, %d bytes) at %s",
                     data.path, len(entries), manifest["total_size"], self.uri)

    def extract_metadata(self, data: ModelFolder) -> dict[str, MetadataType]:
        """Total size, file count and kind of the folder."""
        if self._manifest is not None:
            total, count = self._manifest["total_size"], len(self._manifest["files"])
        else:
            files = data.files()
            total, count = sum((data.path / f).stat().st_size for f in files), len(files)
        return {"total_size": StorageSize(total), "file_count": count, "kind": data.kind}

    def compute_content_hash(self, data: ModelFolder) -> str | None:
        """Digest of the manifest written by :meth:`save` (None if this instance saved nothing).

        ZenML uses it in step cache keys, so identical folder contents give identical keys.
        """
        if self._manifest is None:
            return None
        return manifest_digest(self._manifest["kind"], self._manifest["files"])

    # ------------------------------------------------------------------------------ load

    def load(self, data_type: type[Any]) -> ModelFolder:
        """Copy the files into a local cache folder, checking each against the manifest.

        The returned folder is shared by later loads of the same artifact: treat it as read-only
        (a copy found modified or incomplete is fetched again; unchanged sizes are not re-hashed).

        Raises:
            FileNotFoundError: the manifest is missing (the artifact was not fully saved).
            ArtifactIntegrityError: a file is missing or its size/SHA-256 differs from the manifest.
        """
        manifest = self._read_manifest()
        kind, files = manifest["kind"], manifest["files"]
        digest = manifest_digest(kind, files)
        if self.expected_content_hash and self.expected_content_hash != digest:
            raise ArtifactIntegrityError(
                f"{self._manifest_path()!r} was changed after the artifact was registered (content hash "
                f"{digest[:12]}..., ZenML recorded {self.expected_content_hash[:12]}...): re-run the step that "
                "produced it")

        root = cache_dir() / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"{self.uri}\n{digest}".encode()).hexdigest()[:24]
        target = root / key
        if target.is_dir():
            if self._complete(target, files):
                return ModelFolder(path=target, kind=kind)
            logger.warning("cached copy %s of %s is incomplete or modified; fetching it again", target, self.uri)
            shutil.rmtree(target)

        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".partial-{key}-"))
        try:
            for entry in files:
                self._fetch(entry, tmp)
            try:
                os.replace(tmp, target)
            except OSError:
                if not self._complete(target, files):  # not a concurrent loader that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ModelFolder(path=target, kind=kind)

    # --------------------------------------------------------------------------- helpers

    def _remote_path(self, relative: str) -> str:
        return os.path.join(self.uri, FILES_DIR, *PurePosixPath(relative).parts)

    def _manifest_path(self) -> str:
        return os.path.join(self.uri, MANIFEST_NAME)

    def _read_manifest(self) -> dict[str, Any]:
        path = self._manifest_path()
        if not fileio.exists(path):
            raise FileNotFoundError(f"{path!r} is missing: this model folder artifact was not saved completely "
                                    "(the manifest is written last); re-run the step that produced it")
        try:
            with fileio.open(path, "rb") as f:
                manifest = json.loads(f.read().decode("utf-8"))
            kind, files = manifest["kind"], manifest["files"]
            for entry in files:
                _safe_relative(entry["path"])
                if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
                    raise TypeError(f"entry {entry!r} needs an integer size and a sha256 string")
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactIntegrityError(f"{path!r} is corrupt ({type(e).__name__}: {e}): "
                                         "re-run the step that produced the artifact") from e
        return {"kind": kind, "files": files}

    def _fetch(self, entry: dict[str, Any], local_root: Path) -> None:
        """Stream one file into ``local_root`` and check its size and SHA-256."""
        rel = entry["path"]
        remote = self._remote_path(rel)
        if not fileio.exists(remote):
            raise ArtifactIntegrityError(f"model file {rel!r} is missing from the artifact at {self.uri!r} "
                                         f"(expected {remote!r}): re-run the step that produced it")
        local = local_root.joinpath(*_safe_relative(rel).parts)
        local.parent.mkdir(parents=True, exist_ok=True)
        with fileio.open(remote, "rb") as src, open(local, "wb") as dst:
            size, sha = stream_copy(src, dst)
        if size != entry["size"] or sha != entry["sha256"]:
            raise ArtifactIntegrityError(
                f"model file {rel!r} in the artifact at {self.uri!r} is corrupt: {size} bytes with sha256 "
                f"{sha[:12]}..., the manifest says {entry['size']} bytes with sha256 {entry['sha256'][:12]}...; "
                "re-run the step that produced it")

    @staticmethod
    def _complete(folder: Path, files: list[dict[str, Any]]) -> bool:
        """Every manifest file exists in ``folder`` with its size (a cheap check; no re-hashing)."""
        for entry in files:
            local = folder.joinpath(*PurePosixPath(entry["path"]).parts)
            if not local.is_file() or local.stat().st_size != entry["size"]:
                return False
        return True
