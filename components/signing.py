"""Signatures over canonical JSON: Ed25519 (public key: anyone can verify, only the key's holder
can sign) or HMAC-SHA256 (one shared secret: whoever verifies can also forge; kept as an option).

An Ed25519 signature is a small JSON document, {"alg", "key_id", "signature"}, so a verifier
knows which public key to use; the key id is the first 16 hex digits of the sha256 of the raw
public key. An HMAC signature stays the bare hex digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG = "ed25519"


def new_private_key() -> bytes:
    """A fresh Ed25519 private key, PKCS#8 PEM."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(public: bytes) -> str:
    raw = _public(public).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def sign_ed25519(raw: bytes, private_pem: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    sig = base64.b64encode(key.sign(raw)).decode()
    kid = key_id(public_pem(private_pem))
    return json.dumps({"alg": ALG, "key_id": kid, "signature": sig}, sort_keys=True)


def signature_key_id(signature: str) -> str | None:
    """The key id an Ed25519 signature names; None for an HMAC (or unreadable) signature."""
    try:
        doc = json.loads(signature)
    except json.JSONDecodeError:
        return None
    return doc.get("key_id") if isinstance(doc, dict) and doc.get("alg") == ALG else None


def verify_ed25519(raw: bytes, signature: str, public: bytes) -> bool:
    """True only if the signature names this public key and is valid over `raw`."""
    try:
        doc = json.loads(signature)
        if doc.get("alg") != ALG or doc.get("key_id") != key_id(public):
            return False
        _public(public).verify(base64.b64decode(doc["signature"], validate=True), raw)
        return True
    except (ValueError, KeyError, TypeError, AttributeError, InvalidSignature):
        return False


def sign_hmac(raw: bytes, secret: bytes) -> str:
    return hmac.new(secret, raw, hashlib.sha256).hexdigest()


def verify_hmac(raw: bytes, signature: str, secret: bytes) -> bool:
    return hmac.compare_digest(sign_hmac(raw, secret), signature)
