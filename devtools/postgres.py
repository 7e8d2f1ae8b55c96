"""A fresh PostgreSQL database per test deployment, on the machine's cluster (scripts/postgres.sh).

Production Airflow runs on PostgreSQL; the suite's downstream deployments and its Airflow 3 upstream do
too (the other upstreams stay on SQLite). The role (``xdep``, password ``xdep``: a test-only role on
loopback) may create databases.
"""

from __future__ import annotations

import os
import re

HOST = os.environ.get("XDEP_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("XDEP_PG_PORT", "5432"))
ROLE = os.environ.get("XDEP_PG_ROLE", "xdep")


def fresh_database(name: str) -> str:
    """Drop and create database ``name`` (letters, digits, ``_``); return its SQLAlchemy URL for Airflow."""
    import psycopg2

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain database name: {name!r}")
    conn = psycopg2.connect(host=HOST, port=PORT, user=ROLE, password=ROLE, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()
    return url(name)


def url(name: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{ROLE}:{ROLE}@{HOST}:{PORT}/{name}"


def query(name: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one read-only query on database ``name``; return its rows."""
    import psycopg2

    conn = psycopg2.connect(host=HOST, port=PORT, user=ROLE, password=ROLE, dbname=name)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def dump(name: str) -> bytes:
    """Everything database ``name`` holds, as ``pg_dump`` writes it (plain SQL, data included)."""
    import shutil
    import subprocess

    pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    done = subprocess.run(
        [pg_dump, "--no-owner", "--dbname", url(name, driver="postgresql")],
        capture_output=True,
        timeout=300,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump {name} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout
