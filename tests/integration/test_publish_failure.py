"""A batch that fails after it committed its data snapshot (here the DVC remote refuses the push)
takes back what it wrote, as recovery after a `kill -9` does: HEAD never holds an erasure that no
version certifies, and the next batch runs from the champion's snapshot."""

from __future__ import annotations

import shutil

from pipelines.audit import verify
from pipelines.cli import main
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.registry import data_rev
from pipelines.store import RequestStore
from tests.conftest import make_workspace


def test_a_batch_failing_after_its_snapshot_commit_restores_the_snapshot(
    tmp_path, prefect_server, capsys
):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 3})
    remote = ws.state / "dvc-remote"
    shutil.move(remote, tmp_path / "remote-away")
    remote.write_text("a file where the remote's folder should be")

    assert main(["-w", str(ws.root), "batch", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "pushing the data snapshot to the DVC remote failed" in err, err
    assert err.endswith("(its requests are pending again)"), err

    subjects = ws.git("log", "--format=%s").splitlines()
    batch = next(s.split(":")[0] for s in subjects if ": erase " in s)  # it did commit
    last_data = ws.git("log", "-1", "--format=%s", "--", "data/raw.dvc")
    assert last_data.startswith(f"{batch}: did not finish (it failed: pushing"), subjects[:4]
    champion_rev = data_rev(reg.champion(name).tags)
    assert ws.git("diff", champion_rev, "HEAD", "--", "data") == ""  # the champion's data again
    assert ws.git("status", "--porcelain", "--", "data") == ""
    assert [str(v.version) for v in reg.versions(name)] == ["1"]
    assert not reg.has_alias(name, "candidate")
    exp = reg.client.get_experiment_by_name(ws.settings.registry.experiment)
    assert not reg.client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    with RequestStore(ws.requests_db) as store:
        req = store.get(stored.id)
        assert store.lease(name) is None
    assert req.status == "pending" and "pushing the data snapshot" in req.reason, req.reason

    remote.unlink()
    shutil.move(tmp_path / "remote-away", remote)
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    assert verify(ws, reg, name, outcome.model_version).ok
