"""Signing keys, one per duty: `batch` signs certificates, `review` signs decisions, so whoever
runs batches cannot forge an approval, and whoever verifies needs no secret at all.

Private keys live outside the workspace, in a keyring folder (`UNLEARN_KEY_DIR`, by default
`~/.config/unlearn/keys`): `<role>/<key id>.pem` (mode 0600) and `<role>/current`. A machine that
only runs batches holds only `batch/`. Public keys are published into the workspace,
`audit/keys/<key id>.json` (committed), the first time each signs there; rotation adds a key and
keeps the old public ones, so every earlier signature still verifies.

`certificate.scheme: hmac` keeps the older shared-secret HMAC-SHA256 (the secret in the
environment variable `certificate.key_env`); signatures of either kind verify by their form.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from components.canonical import sha256_hex
from components.certificate import CertificateError, signing_key
from components.files import write_atomic
from components.signing import (
    key_id,
    new_private_key,
    public_pem,
    sign_ed25519,
    sign_hmac,
    signature_key_id,
    verify_ed25519,
    verify_hmac,
)
from pipelines.snapshot import commit_files
from pipelines.workspace import Workspace, utcnow

ROLES = ("batch", "review")
PUBLISHED = "audit/keys"


def key_dir() -> Path:
    return Path(os.environ.get("UNLEARN_KEY_DIR") or Path.home() / ".config" / "unlearn" / "keys")


def _new_key(root: Path, role: str) -> str:
    pem = new_private_key()
    kid = key_id(public_pem(pem))
    folder = root / role
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    write_atomic(folder / "current", kid)  # never a half-written name
    return kid


def init_keys(root: Path | None = None) -> dict[str, tuple[str, bool]]:
    """A key for every role that has none: role -> (key id, created)."""
    root = root or key_dir()
    out = {}
    for role in ROLES:
        have = (root / role / "current").is_file()
        out[role] = (
            ((root / role / "current").read_text().strip(), False)
            if have
            else (_new_key(root, role), True)
        )
    had = (root / SUBJECT_SECRET).is_file()
    out["subject"] = (sha256_hex(subject_secret(root, create=True))[:16], not had)
    return out


SUBJECT_SECRET = "subject.key"


def subject_secret(root: Path | None = None, create: bool = False) -> bytes:
    """The secret that keys subject ids (components.certificate.subject_key): beside the signing
    keys, never in the workspace. Whoever submits or queries subject requests needs it."""
    path = (root or key_dir()) / SUBJECT_SECRET
    if not path.is_file() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        raise CertificateError(
            f"no subject key at {path}: run `unlearn keys init` (or set UNLEARN_KEY_DIR)"
        ) from None


def rotate(role: str, root: Path | None = None) -> str:
    """A new current key for `role`; the old one stays on disk (and published) for the record."""
    if role not in ROLES:
        raise CertificateError(f"unknown key role {role!r}; roles: {', '.join(ROLES)}")
    return _new_key(root or key_dir(), role)


def current_key(role: str, root: Path | None = None) -> tuple[str, bytes]:
    root = root or key_dir()
    try:
        kid = (root / role / "current").read_text().strip()
        return kid, (root / role / f"{kid}.pem").read_bytes()
    except OSError:
        raise CertificateError(
            f"no {role} signing key in {root}; run `unlearn keys init` (or set UNLEARN_KEY_DIR)"
        ) from None


def published(ws: Workspace) -> dict[str, dict]:
    """key id -> {role, public_key, published_at} of every key that ever signed here."""
    folder = ws.root / PUBLISHED
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _publish(ws: Workspace, role: str, kid: str, public: bytes) -> None:
    rel = f"{PUBLISHED}/{kid}.json"
    path = ws.root / rel
    # Published means committed. A file there that git does not hold as it is was left by a
    # batch killed between writing and committing it: written again and committed now, or it
    # would stay out of the history (and `audit verify` flags the records) for good.
    if path.is_file() and not ws.git("status", "--porcelain", "--", rel):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"key_id": kid, "role": role, "public_key": public.decode(), "published_at": utcnow()}
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    commit_files(ws, [rel], f"publish the {role} signing key {kid}")


def require_signer(ws: Workspace, role: str) -> None:
    """Fail before any write when this machine cannot sign as `role`."""
    if ws.settings.certificate.scheme == "hmac":
        signing_key(ws.settings.certificate.key_env)
    else:
        current_key(role)


def sign_as(ws: Workspace, role: str, raw: bytes) -> tuple[str, bytes | None]:
    """(signature, public key PEM or None for HMAC) over `raw`, as `role`."""
    if ws.settings.certificate.scheme == "hmac":
        return sign_hmac(raw, signing_key(ws.settings.certificate.key_env)), None
    kid, pem = current_key(role)
    public = public_pem(pem)
    _publish(ws, role, kid, public)
    return sign_ed25519(raw, pem), public


def check(ws: Workspace, raw: bytes, signature: str, role: str) -> tuple[bool, str]:
    """Whether `signature` over `raw` was made by a `role` key; what was checked."""
    kid = signature_key_id(signature)
    if kid is None:
        ok = verify_hmac(raw, signature, signing_key(ws.settings.certificate.key_env))
        return ok, "HMAC-SHA256 with the shared secret"
    key = published(ws).get(kid)
    if key is None:
        return False, f"signed by key {kid}, which this workspace never published"
    if key.get("role") != role:
        return False, f"signed by the {key.get('role')} key {kid}, not by a {role} key"
    ok = verify_ed25519(raw, signature, key["public_key"].encode())
    return ok, f"Ed25519, {role} key {kid}"
