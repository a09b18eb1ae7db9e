import json

import pytest

from components.canonical import canonical_json
from components.certificate import (
    CertificateError,
    ManifestRef,
    build_certificate,
    flat_diff,
    parse_certificate,
    signing_key,
    subject_key,
)
from components.signing import (
    key_id,
    new_private_key,
    public_pem,
    sign_ed25519,
    sign_hmac,
    verify_ed25519,
    verify_hmac,
)


def test_canonical_bytes_ignore_key_order():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )


def _facts(**over) -> dict:
    snap = {"git_rev": "a" * 40, "dvc_md5": "m", "dvc_lock_sha256": None, "dataset_sha256": "d"}
    facts = {
        "batch": {"id": "b1", "scenario": "class", "created_at": "2026-12-02T00:00:00+00:00"},
        "requests": [  # one of each kind the request store holds
            {"id": "r1", "kind": "class", "received_at": "t", "deadline": "t", "n_samples": 3,
             "class_label": 4},
            {"id": "r2", "kind": "samples", "received_at": "t", "deadline": "t", "n_samples": 2},
            {"id": "r3", "kind": "subject", "received_at": "t", "deadline": "t", "n_samples": 1,
             "subject_sha256": "ff"},
        ],
        "forget_manifest": {"sha256": "ab", "count": 3},
        "data": {"before": snap, "after": {**snap, "git_rev": "b" * 40}},
        "base_model": {"name": "m", "version": "1", "digest": "x"},
        "unlearned_model": {"name": "m", "version": "2", "digest": "y", "run_id": "r"},
        "method": {"name": "rfa", "params": {}, "trainable_fraction": 0.1, "steps": 5,
                   "stop_reason": "steps", "device": "cpu", "seconds": 1.5},
        "code": {"version": "c", "packages": {"torch": "2"}},
        "evaluation": {"original": {"acc_df": 99.0, "n_df": 3}, "unlearned": {"acc_df": 0.0},
                       "attacks": ["a"]},
        "gates": {"passed": True},
    }  # fmt: skip
    return {**facts, **over}


def test_sign_verify_and_tamper():
    key = b"k" * 32
    cert = build_certificate(**_facts())
    assert cert.guarantee == "empirical" and cert.schema_ == "unlearn.certificate/1"
    sig = sign_hmac(cert.to_json(), key)
    assert verify_hmac(cert.to_json(), sig, key)
    tampered = cert.model_copy(update={"forget_manifest": ManifestRef(sha256="ac", count=3)})
    assert not verify_hmac(tampered.to_json(), sig, key)
    assert tampered.digest() != cert.digest()
    assert not verify_hmac(cert.to_json(), sig, b"x" * 32)
    before, after = json.loads(cert.to_json()), json.loads(tampered.to_json())
    assert flat_diff(before, after) == ["forget_manifest.sha256"]


def test_the_stored_bytes_parse_back_to_the_same_certificate_and_bytes():
    """verify hashes the stored bytes and reads the typed fields: both must round-trip, with
    optional request fields left out where unset (a class request carries no subject hash) and
    integer metrics staying integers."""
    cert = build_certificate(**_facts())
    raw = cert.to_json()
    assert raw.count(b"subject_sha256") == 1 and raw.count(b"class_label") == 1
    assert b'"n_df":3' in raw
    again = parse_certificate(raw)
    assert again == cert and again.to_json() == raw
    assert again.data.after.git_rev == "b" * 40 and again.requests[0].class_label == 4


@pytest.mark.parametrize("case, where", [
    ("list", "<root>"), ("truncated", "<root>"), ("bad-value", "batch.scenario"),
    ("extra-field", "surprise"),
])  # fmt: skip
def test_a_malformed_certificate_is_one_line_naming_the_field(case, where):
    good = json.loads(build_certificate(**_facts()).to_json())
    raw = {
        "list": b"[]",
        "truncated": b"{",
        "bad-value": json.dumps({**good, "batch": {**good["batch"], "scenario": "all"}}).encode(),
        "extra-field": json.dumps({**good, "surprise": 1}).encode(),
    }[case]
    with pytest.raises(CertificateError, match="not a unlearn.certificate/1") as err:
        parse_certificate(raw)
    assert where in str(err.value) and "\n" not in str(err.value)


def test_nan_cannot_enter_a_certificate():
    with pytest.raises(ValueError):
        build_certificate(**_facts(gates={"value": float("nan")})).to_json()


def test_key_must_be_set_and_long(monkeypatch):
    monkeypatch.delenv("SOME_KEY", raising=False)
    with pytest.raises(CertificateError, match="SOME_KEY"):
        signing_key("SOME_KEY")
    monkeypatch.setenv("SOME_KEY", "short")
    with pytest.raises(CertificateError):
        signing_key("SOME_KEY")
    monkeypatch.setenv("SOME_KEY", "0123456789abcdef")
    assert signing_key("SOME_KEY") == b"0123456789abcdef"


def test_subject_ids_are_keyed_by_a_secret_and_keying_twice_changes_nothing():
    a, b = subject_key("alice", b"k1" * 16), subject_key("alice", b"k2" * 16)
    assert a != b and "alice" not in a and a.startswith("hmac-sha256:")
    assert subject_key(a, b"other" * 8) == a


def test_an_ed25519_signature_verifies_with_the_public_key_alone_and_names_it():
    mine, other = new_private_key(), new_private_key()
    raw = build_certificate(**_facts()).to_json()
    sig = sign_ed25519(raw, mine)
    assert json.loads(sig)["key_id"] == key_id(public_pem(mine))
    assert verify_ed25519(raw, sig, public_pem(mine))
    assert not verify_ed25519(raw + b" ", sig, public_pem(mine))  # one byte more
    forged = sign_ed25519(raw, other)  # a valid signature, by a key that is not ours
    assert not verify_ed25519(raw, forged, public_pem(mine))
    # ...also when the forger writes our key id into it
    doc = json.loads(forged)
    doc["key_id"] = key_id(public_pem(mine))
    assert not verify_ed25519(raw, json.dumps(doc), public_pem(mine))
    assert not verify_ed25519(raw, "not json", public_pem(mine))
