"""ZenML materializers for the library's artifact types (see ``srpo/artifacts.py``).

Importing this package registers them with ZenML for :class:`~srpo.artifacts.ModelFolder`
and :class:`~srpo.artifacts.RolloutSet`.
"""

from materializers.model_folder import ArtifactIntegrityError, ModelFolderMaterializer
from materializers.rollouts import RolloutSetMaterializer

__all__ = ["ArtifactIntegrityError", "ModelFolderMaterializer", "RolloutSetMaterializer"]
