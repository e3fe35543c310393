"""The console's security parts on their own: password hashes, signed sessions, the lockout's
backoff, the audit log's rotation, and users/tokens files changed by two processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from datonis_edge.console.auth import lockout as lockout_module
from datonis_edge.console.auth.audit import AuditLog
from datonis_edge.console.auth.lockout import Lockout
from datonis_edge.console.auth.passwords import hash_password, verify_password
from datonis_edge.console.auth.sessions import SessionCodec, load_secret
from datonis_edge.console.auth.store import AuthError, ConsoleStore


def test_a_password_hash_is_salted_scrypt_with_its_parameters() -> None:
    one, two = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert one != two and one.startswith("scrypt$32768$8$1$")
    assert verify_password("correct horse battery", one)
    assert not verify_password("correct horse batterx", one)
    assert not verify_password("x", "garbage") and not verify_password("x", "md5$1$2$3$4$5")


def test_a_tampered_or_expired_session_cookie_is_no_session(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    assert load_secret(tmp_path) == secret  # made once, then read
    codec = SessionCodec(secret, 3600)
    session = codec.new("alice", "k1")
    cookie = codec.dumps(session)
    assert codec.loads(cookie) == session
    assert codec.loads(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None
    assert SessionCodec(b"another secret", 3600).loads(cookie) is None
    assert SessionCodec(secret, -1).loads(cookie) is None  # expired
    assert codec.csrf_ok(session, codec.csrf_token(session))
    assert not codec.csrf_ok(codec.new("alice", "k1"), codec.csrf_token(session))


def test_each_lockout_doubles_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(lockout_module.time, "monotonic", lambda: now[0])
    lockout = Lockout(max_failures=2, first_lock_s=10, max_lock_s=25)
    assert lockout.failed("user:a") == 0
    assert lockout.failed("user:a") == 10 and lockout.locked_for("user:a", "address:x") == 10
    now[0] += 10
    assert lockout.locked_for("user:a") == 0
    lockout.failed("user:a")
    assert lockout.failed("user:a") == 20
    now[0] += 20
    lockout.failed("user:a")
    assert lockout.failed("user:a") == 25  # capped
    lockout.succeeded("user:a")
    assert lockout.locked_for("user:a") == 0


def test_the_audit_log_rotates_and_keeps_whole_lines(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, max_bytes=400, backups=2)
    for i in range(60):
        audit.record("admin", "token_created", "127.0.0.1", token=f"t{i}")
    log = tmp_path / "log"
    assert sorted(p.name for p in log.iterdir()) == ["audit.log", "audit.log.1", "audit.log.2"]
    for path in log.iterdir():
        for line in path.read_text().splitlines():
            assert json.loads(line)["action"] == "token_created"
    assert audit.tail(1)[0]["token"] == "t59"


def test_two_processes_changing_tokens_at_once_lose_nothing(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path\n"
        "from datonis_edge.console.auth.store import ConsoleStore\n"
        "s = ConsoleStore(Path(sys.argv[1]))\n"
        "for i in range(25): s.create_token(f'other-{i}', 'viewer')\n"
    )
    other = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    store = ConsoleStore(tmp_path)
    threads = [
        threading.Thread(
            target=lambda n=n: [store.create_token(f"t{n}-{i}", "admin") for i in range(10)]
        )
        for n in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other.wait(60) == 0
    assert len(store.tokens()) == 45


def test_the_last_admin_stays_and_a_bad_file_is_a_sentence(tmp_path: Path) -> None:
    store = ConsoleStore(tmp_path)
    password = store.ensure_first_admin()
    assert password and store.ensure_first_admin() is None
    with pytest.raises(AuthError, match="last admin"):
        store.remove_user("admin")
    store.users_path.write_text("{not json")
    with pytest.raises(AuthError, match=r"not valid JSON.*backup"):
        store.users()
