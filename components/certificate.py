"""The unlearning certificate: canonical JSON and its sha256 (signatures: components/signing.py).

The certificate is evidence, not proof: membership-inference results are empirical, and the
certificate says so (`guarantee: "empirical"`) and names the attacks used.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.canonical import canonical_json, sha256_hex
from components.requests import RequestKind

SCHEMA = "unlearn.certificate/1"
GUARANTEE_NOTE = "membership-inference attacks are evidence, not proof; see gates and attacks"


class CertificateError(ValueError):
    """A certificate is missing, unsigned, tampered with, or the signing key is unavailable."""


def signing_key(env_name: str) -> bytes:
    """The HMAC key from the environment; at least 16 bytes so a typo cannot pass as a key."""
    value = os.environ.get(env_name, "")
    if len(value) < 16:
        raise CertificateError(
            f"set {env_name} to a secret of at least 16 characters to sign and verify certificates"
        )
    return value.encode()


SUBJECT_PREFIX = "hmac-sha256:"


def subject_key(subject_id: str, secret: bytes) -> str:
    """A subject id as stored anywhere but the data owner's mapping: HMAC-SHA256 under a secret
    kept outside the workspace, so reading the workspace does not let anyone confirm a guessed
    id. Idempotent: an id already keyed is returned as is."""
    if subject_id.startswith(SUBJECT_PREFIX):
        return subject_id
    return SUBJECT_PREFIX + hmac.new(secret, subject_id.encode(), hashlib.sha256).hexdigest()


class _Doc(BaseModel):
    # Unknown fields are refused: a certificate with an extra key is not one we wrote.
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatchFacts(_Doc):
    id: str
    scenario: Literal["class", "sample"]
    created_at: str
    ran_by: str = ""  # who ran it: never its approver (absent from certificates before 2026-12)


class RequestFacts(_Doc):
    """One deletion request the batch served; subject ids appear only keyed (subject_key)."""

    id: str
    kind: RequestKind
    received_at: str
    deadline: str
    n_samples: int
    subject_sha256: str | None = None  # subject requests only: the keyed hash, hex
    class_label: int | None = None  # class requests only
    submitted_by: str = ""  # who submitted it: never the batch's approver


class ManifestRef(_Doc):
    sha256: str
    count: int


class SnapshotFacts(_Doc):
    """A DVC data snapshot: the workspace git commit and what it pins."""

    git_rev: str
    dvc_md5: str
    dvc_lock_sha256: str | None
    dataset_sha256: str


class DataFacts(_Doc):
    before: SnapshotFacts
    after: SnapshotFacts


class ModelRef(_Doc):
    name: str
    version: str
    digest: str  # sha256 of the weights (components.models.model_digest)


class UnlearnedModelRef(ModelRef):
    run_id: str


class MethodFacts(_Doc):
    name: str
    params: dict[str, Any]  # the rfa and lora settings, as run
    trainable_fraction: float
    steps: int
    stop_reason: str
    device: str
    seconds: float


class CodeFacts(_Doc):
    version: str
    packages: dict[str, str]


class EvaluationFacts(_Doc):
    original: dict[str, Any]  # metric -> value (None where a split was empty)
    unlearned: dict[str, Any]
    attacks: list[str]


class Certificate(_Doc):
    """The certificate body, schema `unlearn.certificate/1`: what `publish` signs and `verify`
    checks field by field. Serialised with `to_json` (canonical JSON, unset fields left out)."""

    schema_: Literal["unlearn.certificate/1"] = Field(alias="schema")
    guarantee: Literal["empirical"]
    guarantee_note: str
    batch: BatchFacts
    requests: list[RequestFacts]
    forget_manifest: ManifestRef
    data: DataFacts
    base_model: ModelRef
    unlearned_model: UnlearnedModelRef
    method: MethodFacts
    code: CodeFacts
    evaluation: EvaluationFacts
    gates: dict[str, Any]  # the gate report (components.gates) with the base model's verdicts
    # The policy in force (gate thresholds, the forget-fraction cap): signed, so a threshold
    # lowered in the workspace params shows against the previous certified version's.
    policy: dict[str, Any] | None = None
    # sha256 of the version's other files (adapter, gates.json, metrics.json): one byte changed in
    # any of them fails verify (certificates before 2026-12-02 lack it).
    artifacts: dict[str, str] | None = None

    def to_json(self) -> bytes:
        """Canonical JSON bytes: what is hashed, signed and stored."""
        return canonical_json(self.model_dump(mode="json", by_alias=True, exclude_unset=True))

    def digest(self) -> str:
        return sha256_hex(self.to_json())


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"not a {SCHEMA} certificate: {where}: {first['msg']} ({err.error_count()} problems)"


def parse_certificate(raw: bytes) -> Certificate:
    """The typed certificate from its stored bytes; CertificateError with one line if not one."""
    try:
        return Certificate.model_validate_json(raw)
    except ValidationError as err:
        raise CertificateError(_one_line(err)) from None


def build_certificate(**facts: Any) -> Certificate:
    """The certificate for a batch's facts (unsigned); CertificateError (one line) on a missing
    or wrong field, ValueError on NaN / inf (pydantic's JSON mode would turn them into null)."""
    canonical_json(facts)
    doc = {"schema": SCHEMA, "guarantee": "empirical", "guarantee_note": GUARANTEE_NOTE, **facts}
    try:
        return Certificate.model_validate(doc)
    except ValidationError as err:
        raise CertificateError(_one_line(err)) from None


def flat_diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON documents differ (for a message naming what changed)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for k in sorted(set(expected) | set(actual)):
            out += flat_diff(expected.get(k), actual.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
            out += flat_diff(a, b, f"{path}[{i}]")
        return out
    return [] if expected == actual else [path or "<root>"]
