"""Bulk intake at volume: 10,000 requests from one .jsonl file into a fresh digits workspace,
then listed, claimed as one batch and moved through two states, side by side with the same
requests submitted one call at a time (a sample of them).

    .venv/bin/python -m benchmarks.intake_volume [--n 10000] [--single 200] [--out DIR]

Writes results.json; the figures go to benchmarks/notes/intake.md. Timings, not a test.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

from pipelines.env import quiet_environment
from pipelines.store import RequestStore


def main(
    n: int = typer.Option(10_000, help="Requests in the file."),
    single: int = typer.Option(200, help="Of them, how many are also timed one call each."),
    out: Path = typer.Option(Path("benchmarks/results/intake-10k"), help="Output folder."),
) -> None:
    quiet_environment()
    with tempfile.TemporaryDirectory(prefix="intake-") as root:  # two workspaces, removed after
        result = _measure(Path(root), n, single)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def _measure(root: Path, n: int, single: int) -> dict:
    from pipelines.intake import submit, submit_file
    from pipelines.snapshot import read_split
    from pipelines.workspace import init_workspace

    ws_file, ws_one = init_workspace(root / "file"), init_workspace(root / "one")
    ids = read_split(ws_file, "HEAD", "train", pixels=False).ids
    rng = np.random.default_rng(0)
    rows = [
        {
            "id": f"ticket-{i:05d}",
            "kind": "samples",
            "sample_ids": sorted(rng.choice(ids, 3, False)),
        }
        for i in range(n)
    ]
    path = root / "requests.jsonl"
    path.write_text("\n".join(json.dumps(r, default=str) for r in rows) + "\n")
    t0 = time.perf_counter()
    created, known, _ = submit_file(ws_file, path)
    t_file = time.perf_counter() - t0
    t0 = time.perf_counter()
    with RequestStore(ws_file.requests_db) as store:
        stored = store.list()
        t_list = time.perf_counter() - t0
        batch = _batch_moves(store, [r.id for r in stored])
    t0 = time.perf_counter()
    for r in rows[:single]:
        submit(ws_one, {k: v for k, v in r.items() if k != "id"})
    t_one = (time.perf_counter() - t0) / single
    return {"requests": n, "stored": created, "known": known, "listed": len(stored),
            "file_seconds": round(t_file, 2), "list_seconds": round(t_list, 3),
            "one_call_seconds_each": round(t_one, 4), "one_call_sampled": single,
            "per_request_ratio_one_call_vs_file": round(t_one / (t_file / n), 1),
            **batch}  # fmt: skip


def _batch_moves(store: RequestStore, ids: list[str]) -> dict[str, float]:
    """Every stored request claimed as one batch, then moved as a batch through the two states
    a certified batch passes: the store's bulk statements at volume."""
    t0 = time.perf_counter()
    store.claim(ids, "batch-all")
    t_claim = time.perf_counter() - t0
    t0 = time.perf_counter()
    moved = store.transition("batch-all", "awaiting_approval")
    moved += store.transition("batch-all", "certified", from_status=("awaiting_approval",))
    t_move = time.perf_counter() - t0
    if moved != 2 * len(ids):
        raise RuntimeError(f"moved {moved} of {2 * len(ids)} requests")
    return {"claim_seconds": round(t_claim, 3), "two_transitions_seconds": round(t_move, 3)}


if __name__ == "__main__":
    typer.run(main)
