"""`unlearn demo`: the whole product on the embedded digits data, in a fresh workspace.

base model (dvc repro) -> class batch -> approval -> sample batch -> approval -> trace -> verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.text import Text

from pipelines.env import quiet_environment

if TYPE_CHECKING:
    from pipelines.flow import BatchOutcome
    from pipelines.registry import Registry
    from pipelines.workspace import Workspace

METRIC_KEYS = ("acc_dr", "acc_df", "acc_dt", "acc_drt", "acc_dft", "mia_efficacy")
REVIEWER = "demo-reviewer"


def reproduce_base(ws: Workspace) -> None:
    """`dvc repro train_base` (which runs `unlearn train`), then commit dvc.lock and the metrics."""
    from pipelines.snapshot import commit_files
    from pipelines.workspace import WorkspaceError

    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "train_base"],
        cwd=ws.root,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WorkspaceError(f"dvc repro train_base failed: {' | '.join(tail)}")
    commit_files(
        ws,
        ["dvc.lock", "reports/base_metrics.json"],
        "train_base: base model trained and registered",
    )


def _pick_sample_requests(
    ws: Workspace, forgotten: int, fraction: float, seed: int = 0
) -> list[dict]:
    """One subject request plus explicit sample ids, together about `fraction` of the training set,
    drawn from classes other than the forgotten one."""
    from pipelines.intake import current_state

    st = current_state(ws)
    rng = np.random.default_rng(seed)
    eligible = st.train.ids[st.train.y != forgotten]
    label = dict(zip(st.train.ids.tolist(), st.train.y.tolist(), strict=True))
    present = set(eligible.tolist())
    subject = next(
        s
        for s in sorted(st.subjects)
        if st.subjects[s] and all(i in present for i in st.subjects[s])
    )
    taken = set(st.subjects[subject])
    n = max(1, int(round(fraction * len(st.train)))) - len(taken)
    rest = rng.choice(np.array(sorted(present - taken)), size=max(1, n), replace=False)
    assert all(label[i] != forgotten for i in rest)
    return [
        {"kind": "subject", "subject_id": subject},
        {"kind": "samples", "sample_ids": sorted(rest.tolist())},
    ]


def _batch_summary(name: str, outcome: BatchOutcome) -> dict:
    row = {
        "scenario": outcome.scenario,
        "model_name": name,
        "model_version": outcome.model_version,
        **{k: outcome.unlearned.get(k) for k in METRIC_KEYS},
        "gates_passed": bool(outcome.gates.get("passed")),
        "certificate_sha256": outcome.certificate_sha256,
        "base": {k: outcome.original.get(k) for k in METRIC_KEYS},
        "status": outcome.status,
        "gates": outcome.gates.get("gates", []),
    }
    return row


def _verify_all(
    ws: Workspace, reg: Registry, name: str, batches: list[dict], console: Console
) -> dict[str, bool]:
    """`audit verify` of every version the demo registered: version -> ok."""
    from pipelines.audit import verify

    verified = {}
    for b in batches:
        if b["model_version"]:
            rep = verify(ws, reg, name, b["model_version"])
            verified[b["model_version"]] = rep.ok
            verdict = "ok" if rep.ok else "FAILED: " + "; ".join(rep.problems)
            console.print(
                f"verify {name}/{b['model_version']}: {verdict} ({len(rep.checks)} checks)"
            )
    return verified


def _demo_keys(console: Console) -> None:
    """Throw-away signing keys for this demo only, when this machine has none of its own;
    production creates its keys with `unlearn keys init`, one machine per duty."""
    from pipelines.keys import ROLES, init_keys, key_dir

    if all((key_dir() / role / "current").is_file() for role in ROLES):
        return
    os.environ["UNLEARN_KEY_DIR"] = tempfile.mkdtemp(prefix="unlearn-demo-keys-")
    init_keys()
    console.print(f"no signing keys: signing with throw-away demo keys in {key_dir()}")


def run_demo(
    workspace: Path | None,
    summary: Path | None,
    forget_class: int,
    sample_fraction: float,
    console: Console,
) -> dict:
    t0 = time.perf_counter()
    root = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="unlearn-demo-"))
    quiet_environment(root / ".unlearn" / "prefect")
    _demo_keys(console)

    from pipelines.workspace import init_workspace

    with console.status("creating workspace (git + DVC, digits snapshot)"):
        ws = init_workspace(root)
    # Imported only now: Prefect reads PREFECT_HOME (inside the new workspace) at import.
    from pipelines.audit import trace
    from pipelines.flow import deletion_batch
    from pipelines.intake import submit
    from pipelines.report import gate_table, print_trace
    from pipelines.review import approve

    name = ws.settings.registry.model_name
    console.print(f"workspace {ws.root}")
    with console.status("training the base model (dvc repro train_base)"):
        reproduce_base(ws)
    reg = ws.registry()
    console.print(f"base model {name}/{reg.champion(name).version} is champion")

    batches = []
    # The sample batch's requests are drawn after the class batch, from the snapshot it left.
    schedule = [
        ("class", lambda: [{"kind": "class", "class_label": forget_class}]),
        ("sample", lambda: _pick_sample_requests(ws, forget_class, sample_fraction)),
    ]
    for scenario, make_requests in schedule:
        for raw in make_requests():
            stored, _, n = submit(ws, raw)
            console.print(f"request {stored.id}: {raw['kind']} ({n} samples) pending")
        with console.status(f"{scenario} batch: snapshot -> extract -> RFA -> gates -> register"):
            outcome = deletion_batch(str(ws.root))
        console.print(gate_table(outcome))
        batches.append(_batch_summary(name, outcome))
        if outcome.status != "awaiting_approval":
            console.print(Text(f"{outcome.batch_id}: {outcome.reason}", style="red"))
            break
        approve(ws, reg, name, outcome.model_version, REVIEWER)
        batches[-1]["status"] = "approved"
        console.print(f"{REVIEWER} approved {name}/{outcome.model_version}; champion moved")

    print_trace(console, name, trace(ws, reg, name, alias="champion"))
    verified = _verify_all(ws, reg, name, batches, console)
    ok = (
        len(batches) == 2
        and all(b["gates_passed"] for b in batches)
        and all(verified.values())
        and len(verified) == 2
    )
    result = {
        "ok": ok,
        "workspace": str(ws.root),
        "batches": batches,
        "verified": verified,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if summary:
        Path(summary).write_text(json.dumps(result, indent=1) + "\n")
    console.print(
        f"demo {'passed' if ok else 'FAILED'} in {result['seconds']:.1f} s; workspace kept at "
        f"{ws.root}"
    )
    return result
