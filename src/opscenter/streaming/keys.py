"""The installation's age identity: its private half kept encrypted under the data key,
its public half used (with any escrow recipients) for every encrypted backup."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from opscenter.core.security import Keyring
from opscenter.streaming.crypto import generate_identity, key_id, recipient_of

IDENTITY_FILE = "backup-identity.json"
_CONTEXT = "backup-identity"


@dataclass(frozen=True)
class BackupKeys:
    identity: str  # AGE-SECRET-KEY-1...
    recipient: str  # age1...

    @property
    def key_id(self) -> str:
        return key_id(self.recipient)


def load_or_create(keyring: Keyring, keys_dir: Path) -> BackupKeys:
    path = keys_dir / IDENTITY_FILE
    if path.exists():
        data = json.loads(path.read_text())
        identity = keyring.decrypt_secret(data["identity"], context=_CONTEXT)
        return BackupKeys(identity, data["recipient"])
    identity = generate_identity()
    recipient = recipient_of(identity)
    record = {
        "recipient": recipient,
        "identity": keyring.encrypt_secret(identity, context=_CONTEXT),
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return BackupKeys(identity, recipient)
