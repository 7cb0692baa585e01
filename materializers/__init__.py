"""ZenML materializers for the library's artifact types (see ``srpo/artifacts.py``).

Importing this package registers them with ZenML for :class:`~srpo.artifacts.ModelFolder`
and :class:`~srpo.artifacts.RolloutSet`, and for the evaluation suite's folder results
(:mod:`srpo.evaluation.artifacts`).
"""

from materializers.model_folder import ArtifactIntegrityError, ModelFolderMaterializer
from materializers.report_folder import ReportFolderMaterializer
from materializers.rollouts import RolloutSetMaterializer

__all__ = ["ArtifactIntegrityError", "ModelFolderMaterializer", "ReportFolderMaterializer", "RolloutSetMaterializer"]
