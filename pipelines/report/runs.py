"""The MLflow runs the report compares: every run tagged with a recipe or a paper row, read with ``MlflowClient``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import mlflow_runs

#: The experiment the report logs itself to (its runs are never read back as paper runs).
REPORT_EXPERIMENT = "paper-comparison"


@dataclass(frozen=True)
class RunInfo:
    """The parts of an MLflow run the report needs."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    source: str
    recipe: str | None
    profile: str | None
    paper_key: tuple[str, str, str] | None
    metrics: Mapping[str, float]
    start_time: int

    def link(self, ui: str) -> str:
        """The run's page in the MLflow UI at base URL ``ui``."""
        return f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def collect_runs(tracking_uri: str, experiments: Sequence[str] | None = None) -> list[RunInfo]:
    """Finished or running runs tagged with a recipe or a paper row, from ``experiments`` (default: all but
    ``paper-comparison``). An absent sqlite database means no runs (nothing is created)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        return []
    client = mlflow_runs.client(tracking_uri)
    exps = [e for e in client.search_experiments() if e.name != REPORT_EXPERIMENT
            and (experiments is None or e.name in experiments)]
    if not exps:
        return []
    runs: list[RunInfo] = []
    token = None
    while True:
        page = client.search_runs([e.experiment_id for e in exps], max_results=1000, page_token=token)
        for r in page:
            tags = r.data.tags
            key = None
            if tags.get("paper.id") and tags.get("paper.table") and tags.get("paper.row"):
                key = (tags["paper.id"], tags["paper.table"], tags["paper.row"])
            if key is None and not tags.get("recipe"):
                continue
            profile = tags.get("profile")
            runs.append(RunInfo(
                run_id=r.info.run_id, experiment_id=r.info.experiment_id, run_name=r.info.run_name or "",
                status=r.info.status, source=tags.get("source") or "training", recipe=tags.get("recipe"),
                profile=None if profile in (None, "", "None", "none", "null") else profile, paper_key=key,
                metrics=dict(r.data.metrics), start_time=int(r.info.start_time or 0)))
        token = page.token
        if not token:
            break
    return runs
