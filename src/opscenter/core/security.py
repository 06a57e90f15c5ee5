"""Security primitives: password hashing, opaque tokens, JWTs, secrets at rest."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opscenter.core.clock import utcnow

ISSUER = "opscenter"
AUDIENCE = "opscenter-api"

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


@functools.cache
def _dummy_hash() -> str:
    """Verified against for unknown users, so a miss costs the same time as a hit."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def new_token(prefix: str, nbytes: int = 32) -> str:
    return f"{prefix}{secrets.token_urlsafe(nbytes)}"


def sha256_hex(value: str) -> str:
    """Digest for high-entropy tokens (API keys, refresh tokens); a slow hash adds nothing there."""
    return hashlib.sha256(value.encode()).hexdigest()


class InvalidToken(Exception):
    pass


#: How many checked tokens a keyring remembers (see `Keyring._verified`).
VERIFIED_TOKENS = 4096


@dataclass(frozen=True)
class Keyring:
    """Keys kept outside the database, in the data dir (or JWT_SECRET from the environment)."""

    jwt_kid: str
    jwt_keys: dict[str, bytes]
    data_kid: str
    data_keys: dict[str, bytes]
    #: Tokens whose signature and claims were checked, with their claims: a client sends the
    #: same token with each request, and its checks cost more than the request's own query.
    #: The time window is checked again at each use. The keys never change in a process.
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load_or_create(cls, keys_dir: Path, jwt_secret: str | None) -> Keyring:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        jwt_keys = _load_or_create_keyfile(keys_dir / "jwt.json")
        data_keys = _load_or_create_keyfile(keys_dir / "data.json")
        jwt_kid = _newest(jwt_keys)
        if jwt_secret:
            jwt_kid = "env-" + hashlib.sha256(jwt_secret.encode()).hexdigest()[:8]
            jwt_keys = {**jwt_keys, jwt_kid: jwt_secret.encode()}
        return cls(jwt_kid, jwt_keys, _newest(data_keys), data_keys)

    # -- JWT ---------------------------------------------------------------------------
    def issue_jwt(self, claims: dict[str, Any], ttl: timedelta) -> tuple[str, datetime]:
        now = utcnow()
        expires = now + ttl
        payload = {
            **claims,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            payload, self.jwt_keys[self.jwt_kid], algorithm="HS256", headers={"kid": self.jwt_kid}
        )
        return token, expires

    def decode_jwt(self, token: str) -> dict[str, Any]:
        """Algorithm pinned, key chosen by kid, exp/iss/aud required."""
        try:
            header = jwt.get_unverified_header(token)
            key = self.jwt_keys.get(str(header.get("kid")))
            if key is None or header.get("alg") != "HS256":
                raise InvalidToken("unknown key or algorithm")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        return claims

    def claims_or_none(self, token: str) -> dict[str, Any] | None:
        claims = self._verified.get(token)
        if claims is not None and claims.get("nbf", 0) <= time.time() < claims["exp"]:
            return claims
        try:
            claims = self.decode_jwt(token)
        except InvalidToken:
            self._verified.pop(token, None)
            return None
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def sign(self, message: str) -> str:
        """HMAC for values we hand out and check later (CSRF tokens, signed URLs)."""
        mac = hmac.new(self.jwt_keys[self.jwt_kid], message.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def verify_signature(self, message: str, signature: str) -> bool:
        return any(
            hmac.compare_digest(  # bytes: a non-ASCII signature is just wrong, not an error
                base64.urlsafe_b64encode(
                    hmac.new(k, message.encode(), hashlib.sha256).digest()
                ).rstrip(b"="),
                signature.encode("utf-8", "replace"),
            )
            for k in self.jwt_keys.values()
        )

    # -- secrets at rest -----------------------------------------------------------------
    def encrypt_secret(self, plaintext: str, *, context: str) -> str:
        """AES-GCM under the current data key; `context` (table.column:id) is bound as AAD
        so a ciphertext copied onto another row fails to decrypt."""
        nonce = os.urandom(12)
        sealed = AESGCM(self.data_keys[self.data_kid]).encrypt(
            nonce, plaintext.encode(), context.encode()
        )
        return f"v1:{self.data_kid}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt_secret(self, token: str, *, context: str) -> str:
        version, kid, blob = token.split(":", 2)
        if version != "v1" or kid not in self.data_keys:
            raise InvalidToken("unknown secret format or key id")
        raw = base64.b64decode(blob)
        plain = AESGCM(self.data_keys[kid]).decrypt(raw[:12], raw[12:], context.encode())
        return plain.decode()


def _load_or_create_keyfile(path: Path) -> dict[str, bytes]:
    if path.exists():
        data = json.loads(path.read_text())
        return {kid: base64.b64decode(value) for kid, value in data["keys"].items()}
    kid = utcnow().strftime("%Y%m%d") + "-" + secrets.token_hex(3)
    keys = {kid: os.urandom(32)}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": {k: base64.b64encode(v).decode() for k, v in keys.items()}}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return keys


def _newest(keys: dict[str, bytes]) -> str:
    return sorted(keys)[-1]
