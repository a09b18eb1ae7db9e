"""Public-key certificates: the batch key signs certificates, the review key signs decisions; an
auditor verifies offline with the public key alone; a certificate signed with another key, or
with the wrong duty's key, is refused; a rotated key leaves earlier certificates verifiable."""

from __future__ import annotations

import json

from components.signing import new_private_key, sign_ed25519, signature_key_id
from pipelines.audit import verify
from pipelines.cli import main
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.keys import current_key, published, rotate
from pipelines.review import approve
from tests.conftest import make_workspace
from tests.integration.test_integration import _artifact_dir


def _offline(capsys, cert, pub, sig=None) -> tuple[int, str]:
    args = ["audit", "verify-offline", str(cert), "--public-key", str(pub)]
    code = main(args + (["--signature", str(sig)] if sig else []))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def _signature_problem(ws, reg, name, version) -> str:
    report = verify(ws, reg, name, version)
    return "; ".join(p for p in report.problems if p.startswith("certificate.signature"))


def test_keys_per_duty_offline_verification_forgery_and_rotation(
    tmp_path, prefect_server, capsys, monkeypatch
):
    monkeypatch.setenv("UNLEARN_KEY_DIR", str(tmp_path / "keys"))
    assert main(["keys", "init"]) == 0
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 1})
    v2 = deletion_batch(str(ws.root)).model_version
    approve(ws, reg, name, v2, "alice")
    d = _artifact_dir(reg, name, v2)
    cert_kid = signature_key_id((d / "certificate.sig").read_text())
    appr_kid = signature_key_id((d / "approval.sig").read_text())
    keys = published(ws)
    assert cert_kid != appr_kid
    assert (keys[cert_kid]["role"], keys[appr_kid]["role"]) == ("batch", "review")

    # Offline: the version's files and the public key, nothing else.
    code, text = _offline(capsys, d / "certificate.json", d / "certificate.pub")
    assert code == 0 and f"key {cert_kid}" in text
    code, text = _offline(capsys, d / "certificate.json", d / "approval.pub")
    assert code == 1 and "is not signed by key" in text
    # The audit copy committed in git verifies the same way.
    copy = ws.root / "audit" / "certificates" / name / f"v{v2}.json"
    assert _offline(capsys, copy, d / "certificate.pub")[0] == 0

    # A forged signature (another key) is refused offline and in the workspace.
    forged = sign_ed25519((d / "certificate.json").read_bytes(), new_private_key())
    (tmp_path / "forged.sig").write_text(forged)
    code, _ = _offline(
        capsys, d / "certificate.json", d / "certificate.pub", tmp_path / "forged.sig"
    )
    assert code == 1
    genuine = (d / "certificate.sig").read_text()
    (d / "certificate.sig").write_text(forged)
    assert "never published" in _signature_problem(ws, reg, name, v2)
    # The review key is published here, but a certificate is the batch key's to sign.
    _, review_pem = current_key("review")
    (d / "certificate.sig").write_text(
        sign_ed25519((d / "certificate.json").read_bytes(), review_pem)
    )
    assert "not by a batch key" in _signature_problem(ws, reg, name, v2)
    (d / "certificate.sig").write_text(genuine)
    assert verify(ws, reg, name, v2).ok

    # Rotation: the next certificate has the new key; the earlier one still verifies.
    new_kid = rotate("batch")
    submit(ws, {"kind": "class", "class_label": 2})
    v3 = deletion_batch(str(ws.root)).model_version
    sig3 = json.loads((_artifact_dir(reg, name, v3) / "certificate.sig").read_text())
    assert sig3["key_id"] == new_kid != cert_kid
    assert verify(ws, reg, name, v2).ok and verify(ws, reg, name, v3).ok
    assert ws.git("status", "--porcelain", "--", "audit") == ""  # published keys are committed


def test_the_hmac_scheme_still_signs_and_verifies(tmp_path, prefect_server):
    ws = make_workspace(tmp_path, {"certificate": {"scheme": "hmac"}})
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 1})
    v2 = deletion_batch(str(ws.root)).model_version
    approve(ws, reg, name, v2, "alice")
    d = _artifact_dir(reg, name, v2)
    assert signature_key_id((d / "certificate.sig").read_text()) is None  # a bare HMAC digest
    assert not (d / "certificate.pub").exists() and published(ws) == {}
    report = verify(ws, reg, name, v2)
    assert (
        report.ok and "HMAC-SHA256" in {n: d for n, _, d in report.checks}["certificate.signature"]
    )


def test_a_key_written_but_never_committed_is_committed_at_the_next_signature(
    tmp_path, prefect_server, monkeypatch
):
    """What a batch killed between writing its key's public file and committing it leaves (a
    fresh-clone run of test_crash's "during registration" met it): the next signature commits it."""
    monkeypatch.setenv("UNLEARN_KEY_DIR", str(tmp_path / "keys"))
    assert main(["keys", "init"]) == 0
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    kid, _ = current_key("batch")
    left = ws.root / "audit" / "keys" / f"{kid}.json"
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_text('{"key_id": "' + kid)  # cut off mid-write, never committed
    submit(ws, {"kind": "class", "class_label": 1})
    version = deletion_batch(str(ws.root)).model_version
    assert ws.git("status", "--porcelain", "--", "audit") == ""
    assert published(ws)[kid]["role"] == "batch"
    assert verify(ws, reg, name, version).ok


def test_a_refused_signature_is_one_error_line_however_long_its_paths(tmp_path, capsys):
    """Paths longer than the console's width (250 columns when piped) stay on the error line:
    rich wrapped it there, splitting "is not signed by key" (seen under a deep pytest tmp dir)."""
    from components.signing import public_pem

    deep = tmp_path / ("a-long-folder-name-" * 8) / ("another-long-folder-name-" * 6)
    deep.mkdir(parents=True)
    cert, sig, pub = deep / "certificate.json", deep / "certificate.sig", deep / "other.pub"
    cert.write_text('{"model": "m"}')
    sig.write_text(sign_ed25519(cert.read_bytes(), new_private_key()))
    pub.write_bytes(public_pem(new_private_key()))  # another key than the one that signed
    code, text = _offline(capsys, cert, pub, sig)
    lines = text.strip().splitlines()
    assert code == 1 and len(lines) == 1 and len(lines[0]) > 500, text
    assert lines[0].startswith(f"error: {cert} is not signed by key ") and str(pub) in lines[0]
