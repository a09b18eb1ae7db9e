"""A deletion batch whose RFA step runs over 2 torchrun processes (gloo): certified and verified
like any other, with the loss record of the global batch."""

import json
from pathlib import Path
from urllib.parse import urlparse

from pipelines.audit import verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from tests.conftest import make_workspace


def test_a_batch_with_two_rfa_processes_is_certified(tmp_path, prefect_server):
    ws = make_workspace(tmp_path, {"rfa": {"processes": 2, "device": "cpu"}})
    submit(ws, {"kind": "class", "class_label": 5})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    reg, name = ws.registry(), ws.settings.registry.model_name
    report = verify(ws, reg, name, outcome.model_version)
    assert report.ok, report.problems
    art = Path(urlparse(reg.resolve(name, outcome.model_version).source).path)
    cert = json.loads((art / "certificate.json").read_text())
    assert cert["method"]["device"] == "cpu x2 (gloo)"  # it ran in two processes
    run_id = reg.client.get_model_version(name, outcome.model_version).run_id
    loss = reg.client.get_metric_history(run_id, "unlearn.loss_forget")
    assert len(loss) >= 4  # the record of every 10th step came back from rank 0
