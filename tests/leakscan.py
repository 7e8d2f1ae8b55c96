"""Look for credentials in what a downstream deployment keeps: files, its metadata database, and
the values it keeps encrypted (trigger kwargs, Variables) once decrypted with its Fernet key.

A credential is a password (as is, and inside a basic-auth header) or a JWT issued for an upstream
user (an Airflow 3 upstream exchanges login + password for one): any ``header.payload.signature``
whose payload names that user.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path

_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.(eyJ[A-Za-z0-9_-]{8,})\.[A-Za-z0-9_-]+")


def secret_forms(user: str, password: str) -> list[bytes]:
    """The password as bytes, and as it appears inside a basic-auth header for ``user``."""
    return [password.encode(), base64.b64encode(f"{user}:{password}".encode())]


def jwts_for(data: bytes, user: str) -> list[bytes]:
    """JWTs in data whose payload names ``user`` (its ``sub``, or any field)."""
    found = []
    for match in _JWT.finditer(data):
        body = match.group(1)
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            continue
        if isinstance(payload, dict) and user in (str(v) for v in payload.values()):
            found.append(match.group(0))
    return found


def hits(where: str, data: bytes, secrets: list[bytes], jwt_user: str | None = None) -> list[str]:
    """One line per credential found in data (never the credential itself)."""
    out = [f"{where}: {s[:6]!r}... (a secret)" for s in secrets if s in data]
    if jwt_user:
        out += [f"{where}: a JWT issued for {jwt_user!r}" for _ in jwts_for(data, jwt_user)]
    return out


def scan_files(
    root: Path, secrets: list[bytes], jwt_user: str | None = None, skip: tuple[str, ...] = ()
) -> list[str]:
    """Credentials in any file under root (logs, SQLite databases, configuration), but files named in skip."""
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skip:
            found += hits(str(path), path.read_bytes(), secrets, jwt_user)
    return found


def scan_postgres(
    database: str, fernet_key: str, secrets: list[bytes], jwt_user: str | None = None
) -> list[str]:
    """Credentials in a PostgreSQL metadata database: its ``pg_dump``, plus every trigger's kwargs and
    every encrypted Variable, decrypted (a byte scan alone cannot see inside them)."""
    from cryptography.fernet import Fernet, InvalidToken

    from devtools import postgres

    found = hits(f"pg_dump {database}", postgres.dump(database), secrets, jwt_user)
    fernet = Fernet(fernet_key.encode())
    encrypted = [
        (f"trigger {row[0]} kwargs", row[1])
        for row in postgres.query(database, "SELECT id, kwargs FROM trigger")
    ]
    encrypted += [
        (f"variable {row[0]}", row[1])
        for row in postgres.query(database, "SELECT key, val FROM variable WHERE is_encrypted")
    ]
    for where, value in encrypted:
        if value:
            try:
                plain = fernet.decrypt(value.encode())
            except InvalidToken:  # kept in the clear (Airflow 3.0.6 stores trigger kwargs so)
                plain = value.encode()
            found += hits(where, plain, secrets, jwt_user)
    return found


def encrypted_rows(database: str) -> int:
    """How many trigger kwargs and encrypted Variables the database keeps (the scan decrypts them)."""
    from devtools import postgres

    return sum(
        postgres.query(database, sql)[0][0]
        for sql in ("SELECT count(*) FROM trigger", "SELECT count(*) FROM variable WHERE is_encrypted")
    )
