"""The unlearning certificate: canonical JSON, its sha256, and an HMAC-SHA256 signature.

The certificate is evidence, not proof: membership-inference results are empirical, and the
certificate says so (`guarantee: "empirical"`) and names the attacks used.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from components.canonical import canonical_json, sha256_hex

SCHEMA = "unlearn.certificate/1"


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


def subject_digest(subject_id: str, salt: str) -> str:
    """Salted hash of a subject id: lets an auditor answer 'which versions saw subject S' without
    the certificate ever holding the id itself."""
    return sha256_hex(f"{salt}:{subject_id}".encode())


def build_certificate(body: dict[str, Any]) -> dict[str, Any]:
    """Wrap the batch facts into a certificate document (unsigned)."""
    cert = {
        "schema": SCHEMA,
        "guarantee": "empirical",
        "guarantee_note": "membership-inference attacks are evidence, not proof; see gates and attacks",
        **body,
    }
    canonical_json(cert)  # fails early on NaN or non-JSON values
    return cert


def certificate_digest(cert: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(cert))


def sign(cert: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical_json(cert), hashlib.sha256).hexdigest()


def verify_signature(cert: dict[str, Any], signature: str, key: bytes) -> bool:
    return hmac.compare_digest(sign(cert, key), signature)


def flat_diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON documents differ (for a message naming what changed)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for k in sorted(set(expected) | set(actual)):
            out += flat_diff(expected.get(k), actual.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (a, b) in enumerate(zip(expected, actual)):
            out += flat_diff(a, b, f"{path}[{i}]")
        return out
    return [] if expected == actual else [path or "<root>"]
