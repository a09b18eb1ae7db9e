"""Every batch's report, attached where reviewers look: the MLflow run (HTML, markdown, each plot
through `log_figure`, the loss curve as step metrics), the model version's description, and the
Prefect flow run's artifacts (markdown and a gate table)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from matplotlib.figure import Figure

from components.report_figures import FIGURES, figures, png
from components.report_page import ReportContext, gate_rows, html_page, markdown
from pipelines.batch import BatchPlan, Evaluation
from pipelines.registry import Registry, VersionRef

REPORT_DIR = "report"
# MLflow caps a version description (5000 characters on sqlite); the full report is on the run.
DESCRIPTION_MAX = 4500


def request_facts(plan: BatchPlan) -> tuple[dict, ...]:
    """The requests as the report shows them: kind, counts and dates, never a subject id."""
    return tuple(
        {"id": r.id, "kind": r.kind, "received_at": r.received_at, "deadline": r.deadline,
         "n_samples": r.n_samples}
        for r in plan.requests
    )  # fmt: skip


@dataclass(frozen=True)
class Report:
    context: ReportContext
    figures: dict[str, Figure]  # drawn once: inlined in the page and logged with log_figure


def build(
    plan: BatchPlan, ev: Evaluation, title: str, verdict: str, facts: dict[str, str]
) -> Report:
    figs = figures(ev.plots) if ev.plots is not None else {}
    ctx = ReportContext(
        title=title,
        batch_id=plan.batch_id,
        scenario=plan.scenario,
        verdict=verdict,
        requests=request_facts(plan),
        original=ev.original,
        unlearned=ev.unlearned,
        gates=ev.gates_record(),
        facts=tuple(facts.items()),
        figures={n: (FIGURES[n][0], png(f)) for n, f in figs.items()},
    )
    return Report(ctx, figs)


def attach_to_run(reg: Registry, run_id: str, ev: Evaluation, report: Report) -> None:
    """The report's files and plots on the run, and the method's loss records as step metrics."""
    from mlflow.entities import Metric

    client, ctx = reg.client, report.context
    for name, fig in report.figures.items():
        client.log_figure(run_id, fig, f"{REPORT_DIR}/figures/{name}.png")
    if ev.plots is not None:
        now = int(time.time() * 1000)
        steps = [
            Metric(f"unlearn.{k}", float(v), now, int(h["step"]))
            for h in ev.plots.history
            for k, v in h.items()
            if k != "step" and "step" in h
        ]
        for i in range(0, len(steps), 900):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(run_id, metrics=steps[i : i + 900])
    client.log_text(run_id, html_page(ctx), f"{REPORT_DIR}/report.html")
    client.log_text(run_id, markdown(ctx), f"{REPORT_DIR}/report.md")


def describe_version(reg: Registry, ref: VersionRef, ctx: ReportContext, run_id: str) -> None:
    """The report (tables, no plots) as the version's description: the MLflow UI shows it on the
    version's page; the plots are one click away on the run."""
    text = markdown(ctx, figure_dir=None)
    note = f"\nFull report with plots: run `{run_id}`, `{REPORT_DIR}/report.html`.\n"
    if len(text) + len(note) > DESCRIPTION_MAX:
        text = text[: DESCRIPTION_MAX - len(note) - 4] + "\n..."
    reg.client.update_model_version(ref.name, ref.version, description=text + note)


def publish_to_prefect(ctx: ReportContext) -> None:
    """The report as artifacts of the running Prefect flow run (a no-op outside one)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    create_markdown_artifact(
        markdown(ctx, figure_dir=None), key="batch-report", description=ctx.title
    )
    header = ("gate", "value", "threshold", "noise allowance", "verdict")
    create_table_artifact(
        [dict(zip(header, r, strict=True)) for r in gate_rows(ctx)],
        key="batch-gates",
        description=f"{ctx.batch_id}: gates",
    )


def report_failure(reg: Registry, run_id: str, plan: BatchPlan, ev: Evaluation) -> None:
    """A batch whose gates failed gets its report too (on its run): why, with the plots."""
    failed = "; ".join(ev.gates.failures)
    report = build(plan, ev, f"{plan.batch_id}: gates failed", "gates failed", {"failed": failed})
    attach_to_run(reg, run_id, ev, report)
    publish_to_prefect(report.context)
