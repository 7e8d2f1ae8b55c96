"""The leak scanner finds what it looks for (a scan that cannot find anything proves nothing)."""

from __future__ import annotations

import jwt

from tests.leakscan import hits, jwts_for, scan_files, secret_forms


def test_finds_a_password_and_its_basic_auth_form(tmp_path):
    secrets = secret_forms("canary", "Pw-123456")
    (tmp_path / "a.log").write_bytes(b"header Authorization: Basic " + secrets[1] + b"\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.log").write_bytes(b"password=Pw-123456")
    (tmp_path / "passwords.json").write_bytes(b"Pw-123456")
    found = scan_files(tmp_path, secrets, skip=("passwords.json",))
    assert [f.split(":")[0] for f in found] == [str(tmp_path / "a.log"), str(tmp_path / "sub" / "b.log")]
    assert all("Pw-123456" not in f for f in found)  # the report never repeats the secret


def test_finds_a_jwt_issued_for_the_user_only():
    mine = jwt.encode({"sub": "canary", "role": "viewer"}, "k" * 64, algorithm="HS512").encode()
    other = jwt.encode({"sub": "0193-task-uuid"}, "k" * 64, algorithm="HS512").encode()
    data = b"Bearer " + other + b" then " + mine + b"."
    assert jwts_for(data, "canary") == [mine]
    assert hits("x", data, [], jwt_user="canary") == ["x: a JWT issued for 'canary'"]
    assert hits("x", other, [], jwt_user="canary") == []
