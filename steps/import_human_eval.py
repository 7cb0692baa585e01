"""Check and un-blind the raters' annotation files; report shares of Excellent, rates and agreement."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from zenml import log_metadata, step
from zenml.client import Client
from zenml.models import ArtifactVersionResponse

from srpo.evaluation.artifacts import HumanEvalReport
from srpo.evaluation.config import HumanEvalImportConfig
from srpo.evaluation.human_eval import headline, read_key
from srpo.evaluation.human_eval import import_human_eval as run_import
from srpo.evaluation.human_eval.importer import (KEY_OPTIONS, AnnotationError, KeyCandidate, check_key,
                                                 export_id_of, find_key, read_annotations)
from steps._artifacts import KEY_ARTIFACT
from steps._scratch import scratch_dir

PAGE_SIZE = 50


def artifact_version_id(reference: str) -> uuid.UUID | None:
    """``reference`` as an artifact version id, or None when it is not a UUID (or is an existing file)."""
    try:
        version_id = uuid.UUID(reference.strip())
    except ValueError:
        return None
    return None if Path(reference).exists() else version_id


def configured_key(reference: str) -> dict:
    """The key named by ``key:``: a ZenML artifact version id, else a JSON file (local or URL)."""
    version_id = artifact_version_id(reference)
    if version_id is None:
        return read_key(reference)
    try:
        key = Client().get_artifact_version(version_id).load()
    except KeyError as err:
        raise AnnotationError(f"key {reference!r}: no artifact version has this id in this ZenML store; "
                              f"{KEY_OPTIONS}") from err
    check_key(key, f"artifact version {reference}")
    return key


def recorded_export_id(client: Client, version: ArtifactVersionResponse) -> str | None:
    """The export id stored as metadata of the key artifact, else of the step that produced it (older keys)."""
    value = version.run_metadata.get("export_id")
    if value is None and version.producer_step_run_id is not None:
        try:
            value = client.get_run_step(version.producer_step_run_id).run_metadata.get("export_id")
        except KeyError:
            value = None
    return None if value is None else str(value)


def stored_keys(client: Client) -> Iterator[KeyCandidate]:
    """Every ``human_eval_key`` artifact version, newest first."""
    page = 1
    while True:
        try:
            versions = client.list_artifact_versions(artifact=KEY_ARTIFACT, sort_by="desc:created", page=page,
                                                     size=PAGE_SIZE, hydrate=True)
        except KeyError:  # no artifact of that name
            return
        for version in versions.items:
            yield KeyCandidate(f"{KEY_ARTIFACT} version {version.version} ({version.id})",
                               recorded_export_id(client, version), version.load)
        if page >= versions.total_pages:
            return
        page += 1


@step
def import_human_eval(config: HumanEvalImportConfig) -> Annotated[HumanEvalReport, "human_eval_report"]:
    """The key is ``config.key`` (a JSON file or an artifact version id) or, when unset, the newest
    ``human_eval_key`` artifact of the export the annotation files come from (matched by export id)."""
    annotations = read_annotations(config.annotations)
    if config.key is not None:
        key = configured_key(config.key)
    else:
        key = find_key(export_id_of(annotations), stored_keys(Client()))
    report = run_import(config, key, scratch_dir("srpo-human-report-") / "report", annotations)
    data = report.read_json()
    log_metadata(metadata={"export_id": key["export_id"], "excellent_share": headline(data),
                           "hacking_rate": {r["model"]: r["hacking_rate"] for r in data["hacking"]
                                            if r["category"] == "all"},
                           "agreement": {f"{r['study']}/{r['dimension']}": r["alpha"] for r in data["agreement"]}})
    return report
