"""The batch report as a reviewer reads it: markdown (MLflow's version description, Prefect's
artifact) and a self-contained HTML page (plots inlined, opens offline). Pure string building."""

from __future__ import annotations

import base64
import html
from collections import Counter
from dataclasses import dataclass, field

METRIC_ROWS = (
    ("acc_dr", "Acc(Dr) %"),
    ("acc_df", "Acc(Df) %"),
    ("acc_dt", "Acc(Dt) %"),
    ("acc_drt", "Acc(Drt) %"),
    ("acc_dft", "Acc(Dft) %"),
    ("mia_efficacy", "MIA-efficacy (Df), confidence"),
    ("mia_unseen", "  same on unseen Dt (cross-fitted)"),
    ("mia_efficacy_entropy", "MIA-efficacy (Df), entropy"),
    ("mia_unseen_entropy", "  same on unseen Dt (cross-fitted)"),
    ("mia_efficacy_modified_entropy", "MIA-efficacy (Df), mod. entropy"),
    ("mia_unseen_modified_entropy", "  same on unseen Dt (cross-fitted)"),
    ("loss_mia_auc", "loss-MIA AUC"),
    ("retain_leakage", "retain leakage %"),
)


def fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


@dataclass(frozen=True)
class ReportContext:
    """Everything the page states; figures are PNG bytes by name (report_figures.FIGURES)."""

    title: str  # e.g. "digits-cnn version 2" or "batch-... (gates failed)"
    batch_id: str
    scenario: str
    verdict: str  # "awaiting approval" | "gates failed"
    requests: tuple[dict, ...]  # id, kind, received_at, deadline, n_samples (no subject ids)
    original: dict
    unlearned: dict
    gates: dict
    facts: tuple[tuple[str, str], ...] = ()  # certificate hash, method, stop reason, ...
    figures: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (caption, png)


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def request_rows(c: ReportContext) -> list[tuple[str, ...]]:
    return [
        (r["id"], r["kind"], str(r.get("n_samples", "")), r["received_at"][:10], r["deadline"][:10])
        for r in sorted(c.requests, key=lambda r: r["deadline"])
    ]


def metric_rows(c: ReportContext) -> list[tuple[str, ...]]:
    return [
        (label.strip(), fmt(c.original.get(k)), fmt(c.unlearned.get(k)))
        for k, label in METRIC_ROWS
        if c.original.get(k) is not None or c.unlearned.get(k) is not None
    ]


def gate_rows(c: ReportContext) -> list[tuple[str, ...]]:
    return [
        (
            g["name"], fmt(g["value"]), f"{g['comparator']} {fmt(g['threshold'])}",
            fmt(g["allowance"]) if g.get("allowance") else "", "pass" if g["passed"] else "FAIL",
        )
        for g in c.gates.get("gates", [])
    ]  # fmt: skip


def _sections(c: ReportContext) -> list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]:
    kinds = Counter(r["kind"] for r in c.requests)
    due = min((r["deadline"][:10] for r in c.requests), default="-")
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return [
        (
            f"Requests: {len(c.requests)} ({by_kind}), first due {due}",
            ("request", "kind", "samples", "received", "deadline"),
            request_rows(c),
        ),
        ("Metrics", ("metric", "base", "unlearned"), metric_rows(c)),
        (
            f"Gates: {'all passed' if c.gates.get('passed') else 'FAILED'}",
            ("gate", "value", "threshold", "noise allowance", "verdict"),
            gate_rows(c),
        ),
    ]


def markdown(c: ReportContext, figure_dir: str | None = "figures") -> str:
    """The report in markdown; with `figure_dir`, plots link to `<dir>/<name>.png` beside it."""
    out = [f"# {c.title}", "", f"Batch `{c.batch_id}` ({c.scenario} unlearning): **{c.verdict}**"]
    out += [""] + [f"- {k}: {v}" for k, v in c.facts]
    for title, header, rows in _sections(c):
        out += ["", f"## {title}", "", _md_table(header, rows)]
    if "forgetting_evidence" in c.gates:
        out += ["", f"Forgetting evidence: {c.gates['forgetting_evidence']}"]
    if figure_dir is not None and c.figures:
        out += ["", "## Plots", ""]
        out += [f"![{cap}]({figure_dir}/{name}.png)" for name, (cap, _) in c.figures.items()]
    return "\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.2rem .6rem}
td{text-align:right}td:first-child{text-align:left}.FAIL{color:#b00;font-weight:bold}
.pass{color:#080}figure{display:inline-block;margin:.5rem}img{max-width:100%}"""


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{html.escape(v)}">{html.escape(v)}</td>' for v in r) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(c: ReportContext) -> str:
    """Self-contained: the plots are inlined as data URIs, no script, nothing fetched."""
    e = html.escape
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(c.title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{e(c.title)}</h1>",
        f"<p>Batch <code>{e(c.batch_id)}</code> ({e(c.scenario)} unlearning): "
        f"<strong>{e(c.verdict)}</strong></p><ul>",
        *(f"<li>{e(k)}: <code>{e(v)}</code></li>" for k, v in c.facts),
        "</ul>",
    ]
    for title, header, rows in _sections(c):
        parts += [f"<h2>{e(title)}</h2>", _html_table(header, rows)]
    if "forgetting_evidence" in c.gates:
        parts.append(f"<p>Forgetting evidence: {e(c.gates['forgetting_evidence'])}</p>")
    parts.append("<h2>Plots</h2>")
    for name, (cap, data) in c.figures.items():
        src = "data:image/png;base64," + base64.b64encode(data).decode()
        parts.append(
            f'<figure id="{e(name)}"><img src="{src}" alt="{e(cap)}">'
            f"<figcaption>{e(cap)}</figcaption></figure>"
        )
    return "".join(parts) + "</body></html>\n"
