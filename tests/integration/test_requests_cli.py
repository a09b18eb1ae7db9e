"""`unlearn request ...` at the command line: due dates, bulk intake, cancel and defer."""

from __future__ import annotations

import json

from pipelines.snapshot import read_split
from pipelines.store import RequestStore
from tests.conftest import make_workspace
from tests.integration.test_cli import _one_line_error, _request_count, run


def test_an_overdue_request_is_listed_and_its_scenario_goes_first(tmp_path, capsys):
    """A samples request past its due date is listed by --overdue and --due-within, and the next
    batch serves its scenario before a class request that is due later."""
    from pipelines.batch import plan_batch

    ws = make_workspace(tmp_path)
    ids = read_split(ws, "HEAD", "train", pixels=False).ids[:5].tolist()
    code, _, _ = run(capsys, "-w", ws.root, "request", "submit", "--samples", ",".join(ids))
    assert code == 0
    code, _, _ = run(capsys, "-w", ws.root, "request", "submit", "--class", "6")
    with RequestStore(ws.requests_db) as store:
        by_kind = {r.kind: r for r in store.list()}  # received in the same second: not by order
        late, cls = by_kind["samples"], by_kind["class"]
        store._db.exec_driver_sql(  # as if 31 days had passed since it was received
            "UPDATE requests SET deadline = '2026-01-01T00:00:00+00:00' WHERE id = ?", (late.id,)
        )
    code, out, _ = run(capsys, "-w", ws.root, "request", "list", "--overdue", "--json")
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [late.id]
    code, out, _ = run(capsys, "-w", ws.root, "request", "list", "--due-within", "31d", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [late.id, cls.id]
    code, _, err = run(capsys, "-w", ws.root, "request", "list", "--due-within", "soon")
    assert code == 2
    _one_line_error(err, "--due-within 'soon': expected a number and d, h or m")
    with RequestStore(ws.requests_db) as store:
        plan = plan_batch(ws.settings.registry.model_name, store, ws.registry(), "batch-t")
    assert plan.scenario == "sample" and [r.id for r in plan.requests] == [late.id]


def test_bulk_intake_from_jsonl_and_csv_is_atomic_and_idempotent_by_client_id(capsys, tmp_path):
    ws = make_workspace(tmp_path, train=False)  # intake validates against HEAD's snapshot
    ids = read_split(ws, "HEAD", "train", pixels=False).ids[100:130].tolist()
    rows = [{"id": f"ticket-{i}", "kind": "samples", "sample_ids": ids[3 * i : 3 * i + 3]}
            for i in range(4)]  # fmt: skip
    jsonl = tmp_path / "requests.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    before = _request_count(ws)
    code, out, _ = run(capsys, "-w", ws.root, "request", "submit", "--file", jsonl)
    assert code == 0 and "stored 4 requests (0 already known), 12 samples" in out
    code, out, _ = run(capsys, "-w", ws.root, "request", "submit", "--file", jsonl)
    assert code == 0 and "stored 0 requests (4 already known)" in out  # resubmitting is harmless
    with RequestStore(ws.requests_db) as store:
        assert store.get("ticket-2").request.sample_ids == tuple(sorted(ids[6:9]))
    csv_file = tmp_path / "requests.csv"
    csv_file.write_text(f"id,kind,target\nt-a,samples,{ids[20]};{ids[21]}\nt-b,class,9\n")
    code, out, _ = run(capsys, "-w", ws.root, "request", "submit", "--file", csv_file)
    assert code == 0 and "stored 2 requests" in out
    assert _request_count(ws) == before + 6
    # One bad line refuses the whole file, naming the line; nothing of it is stored.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"kind": "samples", "sample_ids": [ids[25]]})
        + "\n"
        + json.dumps({"kind": "samples", "sample_ids": ["no-such-id"]})
        + "\n"
    )
    code, _, err = run(capsys, "-w", ws.root, "request", "submit", "--file", bad)
    assert code == 2
    _one_line_error(err, f"{bad}:2: unknown sample id 'no-such-id'")
    reused = tmp_path / "reused.jsonl"
    reused.write_text(json.dumps({"id": "ticket-0", "kind": "class", "class_label": 8}) + "\n")
    code, _, err = run(capsys, "-w", ws.root, "request", "submit", "--file", reused)
    _one_line_error(err, "request id 'ticket-0' names a different request")
    assert _request_count(ws) == before + 6


def test_cancel_and_defer_a_request_with_a_reason(tmp_path, capsys):
    ws = make_workspace(tmp_path, train=False)
    ids = read_split(ws, "HEAD", "train", pixels=False).ids[:4].tolist()
    for chunk in (ids[:2], ids[2:]):
        run(capsys, "-w", ws.root, "request", "submit", "--samples", ",".join(chunk))
    with RequestStore(ws.requests_db) as store:
        a, b = (r.id for r in store.list())
    code, out, _ = run(capsys, "-w", ws.root, "request", "cancel", a, "--reason", "sent twice")
    assert code == 0 and f"cancelled {a}" in out
    code, _, err = run(capsys, "-w", ws.root, "request", "cancel", a, "--reason", "again")
    assert code == 2
    _one_line_error(err, f"request {a} is not pending or set_aside")
    code, _, err = run(capsys, "-w", ws.root, "request", "cancel", "req-nope", "--reason", "x")
    _one_line_error(err, "no request 'req-nope'")
    code, out, _ = run(
        capsys, "-w", ws.root, "request", "defer", b, "--for", "2d", "--reason", "legal review"
    )
    assert code == 0 and f"deferred {b} until" in out
    code, _, err = run(
        capsys, "-w", ws.root, "request", "defer", b, "--for", "later", "--reason", "x"
    )
    _one_line_error(err, "--for 'later': expected a number and d, h or m")
    with RequestStore(ws.requests_db) as store:
        assert store.get(a).status == "cancelled" and "sent twice" in store.get(a).reason
        assert store.ready() == [] and "legal review" in store.get(b).reason
        assert [n for _, st, n in store.history(a)][-1] == "cancelled: sent twice"
    # A person's words are shown as typed: square brackets are text, not console styling (rich
    # markup ate "[bold]" and raised on a closing tag that opens nothing, "[/legal]").
    why = "[bold]held[/bold], see [/legal] 12"
    code, _, err = run(capsys, "-w", ws.root, "request", "defer", b, "--for", "3d", "--reason", why)
    assert code == 0, err
    code, out, err = run(capsys, "-w", ws.root, "request", "list")
    assert code == 0 and why in out, err


def test_listing_requests_loads_no_model_library(tmp_path):
    """Commands that touch no model answer without importing torch (about a second of a CLI
    call's start-up on 2 CPU cores)."""
    import subprocess
    import sys

    ws = make_workspace(tmp_path, train=False)
    code = (
        "import sys; from pipelines.cli import main; "
        f"main(['-w', {str(ws.root)!r}, 'request', 'list', '--json']); "
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "no torch"
