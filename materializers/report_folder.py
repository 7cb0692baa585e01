"""ZenML materializer for the evaluation suite's folder results (``srpo.evaluation.artifacts``).

Stored file by file with a SHA-256 manifest, like model folders (the same code); on top of that
the folder's ``index.html`` becomes the artifact's HTML visualization in the dashboard and its
first CSV table a CSV visualization, and a few numbers become artifact metadata.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.metadata.metadata_types import MetadataType

from materializers.model_folder import FILES_DIR, ModelFolderMaterializer
from srpo.evaluation.artifacts import (INDEX_HTML, EvalResults, HumanEvalPages, HumanEvalReport, PromptReport,
                                       ReportFolder)

#: The table shown as the CSV visualization, per kind (the first CSV file otherwise).
MAIN_TABLE = {"evaluation": "summary.csv", "human-eval-report": "excellent_share.csv",
              "prompt-analysis": "word_frequency.csv"}


class ReportFolderMaterializer(ModelFolderMaterializer):
    """Stores a :class:`ReportFolder` (and subclasses) and shows its ``index.html``."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (ReportFolder, EvalResults, HumanEvalPages,
                                                         HumanEvalReport, PromptReport)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: type[Any]) -> ReportFolder:
        folder = super().load(data_type)
        cls = data_type if isinstance(data_type, type) and issubclass(data_type, ReportFolder) else ReportFolder
        return cls(path=folder.path, kind=folder.kind)

    def save_visualizations(self, data: ReportFolder) -> dict[str, VisualizationType]:
        out: dict[str, VisualizationType] = {}
        index = os.path.join(self.uri, FILES_DIR, INDEX_HTML)
        if fileio.exists(index):
            out[index] = VisualizationType.HTML
        name = MAIN_TABLE.get(data.kind)
        tables = [p.name for p in data.csv_files()]
        chosen = name if name in tables else (tables[0] if tables else None)
        if chosen:
            out[os.path.join(self.uri, FILES_DIR, chosen)] = VisualizationType.CSV
        return out

    def extract_metadata(self, data: ReportFolder) -> dict[str, MetadataType]:
        meta = dict(super().extract_metadata(data))
        try:
            main = data.read_json()
        except (OSError, ValueError):
            return meta
        if data.kind == "evaluation":
            meta.update({"num_prompts": len(main.get("items", [])), "models": ", ".join(main.get("models", [])),
                         "metrics": ", ".join(main.get("metrics", []))})
        elif data.kind == "human-eval-pages":
            meta.update({"pages": len(main.get("pages", [])), "export_id": main.get("export_id", "")})
        elif data.kind == "prompt-analysis":
            meta.update({"num_prompts": main.get("num_prompts", 0), "vocabulary": main.get("vocabulary", 0)})
        return meta
