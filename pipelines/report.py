"""Rich renderings of batch outcomes and lineage chains."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from components.report_page import METRIC_ROWS, fmt

if TYPE_CHECKING:
    from pipelines.flow import BatchOutcome

_f = fmt


def metrics_table(title: str, original: dict, unlearned: dict) -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("base", justify="right")
    t.add_column("unlearned", justify="right")
    for key, label in METRIC_ROWS:
        if original.get(key) is None and unlearned.get(key) is None:
            continue
        t.add_row(label, _f(original.get(key)), _f(unlearned.get(key)))
    return t


def gates_table(title: str, gates: dict) -> Table:
    t = Table(title=title)
    for col in ("gate", "value", "threshold", "noise allowance", "verdict", "reference"):
        t.add_column(col)
    for g in gates.get("gates", []):
        t.add_row(
            g["name"],
            _f(g["value"]),
            f"{g['comparator']} {_f(g['threshold'])}",
            _f(g["allowance"]) if g["allowance"] else "",
            Text("pass", style="green") if g["passed"] else Text("FAIL", style="red"),
            g["reference"],
        )
    return t


def gate_table(outcome: BatchOutcome) -> Table:
    """Metrics of base vs unlearned, then every gate, stacked."""
    grid = Table.grid()
    grid.add_row(
        metrics_table(
            f"{outcome.batch_id} ({outcome.scenario})", outcome.original, outcome.unlearned
        )
    )
    grid.add_row(
        gates_table(
            f"gates ({'passed' if outcome.gates.get('passed') else 'FAILED'})", outcome.gates
        )
    )
    if "forgetting_evidence" in outcome.gates:
        grid.add_row(f"forgetting evidence: {outcome.gates['forgetting_evidence']}")
    if outcome.timings:
        rest = sum(
            v for k, v in outcome.timings.items() if k in ("pin", "extract", "evaluate", "publish")
        )
        grid.add_row(
            f"seconds: unlearning {outcome.timings.get('unlearn', 0):.1f}, everything else "
            f"{rest:.1f} "
            f"({', '.join(f'{k} {v:.1f}' for k, v in outcome.timings.items() if k != 'unlearn')})"
        )
    return grid


def print_trace(console: Console, name: str, chain: list[dict]) -> None:
    for e in chain:
        if "deleted" in e:
            console.print(Text.assemble((f"{name}/{e['version']}", "bold"), f" {e['deleted']}"))
            continue
        aliases = ",".join(e.get("aliases", [])) or "-"
        if e.get("retired"):
            aliases += f" (retired: {e['retired']}, {e.get('retired_reason', '')})"
        status = e.get("status", "")
        rest = f" {e.get('kind', '')} status={status} aliases={aliases}"
        console.print(Text.assemble((f"{name}/{e['version']}", "bold"), rest))
        console.print(
            f"  model digest {e.get('model_digest', '')[:16]}  code "
            f"{e.get('code_version', '')[:16]}"
        )
        if e.get("kind") == "base":
            console.print(
                f"  trained on data {e.get('data.rev', '')[:10]} (dvc "
                f"{e.get('data.dvc_md5', '')[:10]}, dataset "
                f"{e.get('data.dataset_sha256', '')[:10]})"
            )
            continue
        cert = e.get("certificate", {})
        console.print(
            f"  batch {e.get('batch_id')} ({e.get('scenario')}) from base version "
            f"{e.get('base_version')}"
        )
        for r in cert.get("requests", []):
            console.print(
                f"  request {r['id']} {r['kind']} n={r['n_samples']} received {r['received_at']} "
                f"deadline {r['deadline'][:10]}"
            )
        console.print(
            f"  forget manifest {e.get('forget_manifest_sha256', '')[:16]} "
            f"({cert.get('forget_count')} samples)"
        )
        d = cert.get("data", {})
        if d:
            console.print(
                f"  data before {d['before']['git_rev'][:10]} -> after "
                f"{d['after']['git_rev'][:10]} (dvc {d['after']['dvc_md5'][:10]})"
            )
        console.print(
            f"  certificate {cert.get('sha256', '')[:16]}; gate policy {cert.get('policy')}"
        )
        for gname, value, thr, ok in cert.get("gates", []):
            console.print(f"    gate {gname}: {_f(value)} vs {_f(thr)} {'pass' if ok else 'FAIL'}")
        appr = e.get("approval")
        console.print(
            f"  approved by {appr['reviewer']} at {appr['at']}"
            if appr
            else f"  not approved ({e.get('status')})"
        )
