import pytest

from components.canonical import canonical_json
from components.certificate import (
    CertificateError,
    build_certificate,
    certificate_digest,
    flat_diff,
    sign,
    signing_key,
    subject_digest,
    verify_signature,
)


def test_canonical_bytes_ignore_key_order():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )


def test_sign_verify_and_tamper():
    key = b"k" * 32
    cert = build_certificate({"gates": {"passed": True}, "forget_manifest": {"sha256": "ab"}})
    assert cert["guarantee"] == "empirical"
    sig = sign(cert, key)
    assert verify_signature(cert, sig, key)
    tampered = {**cert, "forget_manifest": {"sha256": "ac"}}
    assert not verify_signature(tampered, sig, key)
    assert certificate_digest(tampered) != certificate_digest(cert)
    assert not verify_signature(cert, sig, b"x" * 32)
    assert flat_diff(cert, tampered) == ["forget_manifest.sha256"]


def test_nan_cannot_enter_a_certificate():
    with pytest.raises(ValueError):
        build_certificate({"value": float("nan")})


def test_key_must_be_set_and_long(monkeypatch):
    monkeypatch.delenv("SOME_KEY", raising=False)
    with pytest.raises(CertificateError, match="SOME_KEY"):
        signing_key("SOME_KEY")
    monkeypatch.setenv("SOME_KEY", "short")
    with pytest.raises(CertificateError):
        signing_key("SOME_KEY")
    monkeypatch.setenv("SOME_KEY", "0123456789abcdef")
    assert signing_key("SOME_KEY") == b"0123456789abcdef"


def test_subject_digest_is_salted():
    assert subject_digest("alice", "s1") != subject_digest("alice", "s2")
    assert "alice" not in subject_digest("alice", "s1")
