"""ZenML materializer for :class:`srpo.artifacts.RolloutSet`.

The set is written with :meth:`RolloutSet.save` into a local temporary folder, and its two
files (``tensors.safetensors``, ``meta.json``) are streamed into the artifact store through
``zenml.io.fileio``; loading reverses this and calls :meth:`RolloutSet.load`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.metadata.metadata_types import MetadataType

from materializers.model_folder import stream_copy
from srpo.artifacts import ROLLOUT_META, ROLLOUT_TENSORS, RolloutSet

ROLLOUT_FILES = (ROLLOUT_TENSORS, ROLLOUT_META)


class RolloutSetMaterializer(BaseMaterializer):
    """Stores a :class:`RolloutSet` as ``tensors.safetensors`` + ``meta.json``."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (RolloutSet,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    _content_hash: str | None = None

    def save(self, data: RolloutSet) -> None:
        """Write the set locally, then stream both files into ``self.uri`` (hashing them on the way)."""
        digest = hashlib.sha256()
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            data.save(tmp)
            for name in ROLLOUT_FILES:
                with open(Path(tmp) / name, "rb") as src, fileio.open(os.path.join(self.uri, name), "wb") as dst:
                    _, sha = stream_copy(src, dst)
                digest.update(f"{name}:{sha}\n".encode())
        self._content_hash = digest.hexdigest()

    def load(self, data_type: type[Any]) -> RolloutSet:
        """Copy both files into a local temporary folder and read them with :meth:`RolloutSet.load`.

        Raises:
            FileNotFoundError: a file is missing from the artifact (the message names it).
            ValueError: a file is corrupt.
        """
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            for name in ROLLOUT_FILES:
                remote = os.path.join(self.uri, name)
                if not fileio.exists(remote):
                    raise FileNotFoundError(f"rollout set file {remote!r} is missing from the artifact store: "
                                            "the artifact was not saved completely; re-run the rollout step")
                with fileio.open(remote, "rb") as src, open(Path(tmp) / name, "wb") as dst:
                    stream_copy(src, dst)
            return RolloutSet.load(tmp)

    def extract_metadata(self, data: RolloutSet) -> dict[str, MetadataType]:
        """Number of rollouts, mode, image size and latent shape."""
        return {"num_rollouts": len(data), "mode": data.mode, "height": data.height, "width": data.width,
                "latent_shape": str(list(data.x0.shape))}

    def compute_content_hash(self, data: RolloutSet) -> str | None:
        """Hash of the two stored files' SHA-256s (None if this instance saved nothing)."""
        return self._content_hash
