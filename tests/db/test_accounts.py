"""The operator's accounts (procedures/ops/accounts, behind `commercecore users`): the rules of a new account,
role changes and disabling, with the sessions they revoke; a disabled account is not found at login and gets
no session, even when its login and the disable run at the same time."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from tests.conftest import Session
from tests.db.shop import detail

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
CREATE = "select ops.create_account(%s, %s, %s, %s)"


def email() -> str:
    return f"op-{uuid.uuid4().hex[:10]}@example.com"


def open_session(db: Session, user_id: int) -> str:
    jti = str(uuid.uuid4())
    db.conn.execute("select auth.create_session(%s, %s, now() + interval '1 hour')", [user_id, jti])
    return jti


def active(db: Session, jti: str, user_id: int, role: str) -> bool:
    return bool(db.one("select auth.session_active(%s, %s, %s)", [jti, user_id, role]))


def wait_until_blocked(url: str, waiter: int, holder: int, deadline: float = 30.0) -> None:
    """Polls, up to a deadline, until the backend `waiter` waits for a lock `holder` holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            row = conn.execute("select %s = any (pg_blocking_pids(%s))", [holder, waiter]).fetchone()
            if row is not None and row[0]:
                return
    pytest.fail(f"backend {waiter} never waited for {holder}")


def test_create_account_keeps_the_rules_of_signup(db: Session) -> None:
    address = email()
    account = db.one(CREATE, [f"  {address.upper()} ", "app_admin", HASH, "Ops"])
    assert (account["email"], account["role"], account["full_name"]) == (address, "app_admin", "Ops")
    assert account["disabled_at"] is None
    assert db.one("select role from auth.login_lookup(%s)", [address]) == "app_admin"

    with db.raises("PT409") as taken:
        db.conn.execute(CREATE, [address, "app_readwrite", HASH, ""])
    assert detail(taken)["code"] == "email_taken"
    with db.raises("PT422") as bad_role:
        db.conn.execute(CREATE, [email(), "superuser", HASH, ""])
    assert detail(bad_role) == {
        "code": "invalid_input",
        "field": "role",
        "value": "superuser",
        "allowed": ["app_readwrite", "app_admin"],
    }
    with db.raises("PT422") as bad_email:
        db.conn.execute(CREATE, ["not-an-address", "app_admin", HASH, ""])
    assert detail(bad_email)["field"] == "email"
    # a plain password never reaches the table
    with db.raises("23514"):
        db.conn.execute(CREATE, [email(), "app_admin", "plain password", ""])


def test_accounts_lists_by_role(db: Session) -> None:
    staff, customer = email(), email()
    db.one(CREATE, [staff, "app_admin", HASH, ""])
    db.one(CREATE, [customer, "app_readwrite", HASH, ""])
    admins = {row[0] for row in db.all("select email from ops.accounts('app_admin')")}
    everyone = {row[0] for row in db.all("select email from ops.accounts()")}
    assert staff in admins
    assert customer not in admins
    assert {staff, customer} <= everyone
    with db.raises("PT422"):
        db.conn.execute("select * from ops.accounts('owner')")


def test_a_role_change_revokes_the_sessions_of_the_old_role(db: Session) -> None:
    address = email()
    user_id = db.one(CREATE, [address, "app_readwrite", HASH, ""])["id"]
    jti = open_session(db, user_id)
    same = db.one("select ops.set_account_role(%s, 'app_readwrite')", [address])
    assert same["sessions_revoked"] == 0
    assert active(db, jti, user_id, "app_readwrite")
    changed = db.one("select ops.set_account_role(%s, 'app_admin')", [address.upper()])
    assert (changed["role"], changed["sessions_revoked"]) == ("app_admin", 1)
    assert not active(db, jti, user_id, "app_readwrite")
    with db.raises("PT404") as unknown:
        db.conn.execute("select ops.set_account_role(%s, 'app_admin')", [email()])
    assert detail(unknown)["resource"] == "user"


def test_a_disabled_account_signs_in_no_more_until_enabled(db: Session) -> None:
    address = email()
    user_id = db.one(CREATE, [address, "app_admin", HASH, ""])["id"]
    jti = open_session(db, user_id)
    disabled = db.one("select ops.set_account_disabled(%s, true)", [address])
    assert disabled["sessions_revoked"] == 1
    assert disabled["disabled_at"] is not None
    assert not active(db, jti, user_id, "app_admin")
    assert db.all("select * from auth.login_lookup(%s)", [address]) == []
    with db.raises("PT401") as refused:
        open_session(db, user_id)
    assert detail(refused)["code"] == "account_disabled"
    again = db.one("select ops.set_account_disabled(%s, true)", [address])
    assert again["disabled_at"] == disabled["disabled_at"]  # the first disable's time stays

    enabled = db.one("select ops.set_account_disabled(%s, false)", [address])
    assert enabled["disabled_at"] is None
    assert enabled["sessions_revoked"] == 0
    assert db.one("select count(*) from auth.login_lookup(%s)", [address]) == 1
    open_session(db, user_id)


def test_the_accounts_are_the_owners_alone(db: Session) -> None:
    for role in ("authenticator", "app_admin", "app_dba", "app_payments"):
        for function in (
            "ops.create_account(text, text, text, text)",
            "ops.accounts(text)",
            "ops.set_account_role(text, text)",
            "ops.set_account_disabled(text, boolean)",
        ):
            assert db.one("select has_function_privilege(%s, %s, 'execute')", [role, function]) is False


def test_a_login_racing_a_disable_leaves_no_open_session(fresh_db: str) -> None:
    """The login's session and the disable's revocation are serialised on the user row: whichever commits
    first, the account ends disabled with no active session."""
    address = email()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        row = conn.execute(CREATE, [address, "app_admin", HASH, ""]).fetchone()
        assert row is not None
        user_id = row[0]["id"]
    with psycopg.connect(fresh_db) as login, psycopg.connect(fresh_db) as operator:
        login.execute(
            "select auth.create_session(%s, %s, now() + interval '1 hour')", [user_id, str(uuid.uuid4())]
        )
        # the login holds its session uncommitted: the disable must wait for it, then revoke it
        result: list[int] = []

        def disable() -> None:
            account = operator.execute("select ops.set_account_disabled(%s, true)", [address]).fetchone()
            assert account is not None
            result.append(account[0]["sessions_revoked"])
            operator.commit()

        worker = threading.Thread(target=disable)
        worker.start()
        wait_until_blocked(fresh_db, operator.info.backend_pid, login.info.backend_pid)
        assert result == []
        login.commit()
        worker.join(timeout=30)
        assert not worker.is_alive()
    assert result == [1]
    with psycopg.connect(fresh_db) as conn:
        open_sessions = conn.execute(
            "select count(*) from auth.sessions where user_id = %s and revoked_at is null", [user_id]
        ).fetchone()
    assert open_sessions == (0,)


def test_disabled_must_be_true_or_false(db: Session) -> None:
    address = email()
    db.one(CREATE, [address, "app_admin", HASH, ""])
    with db.raises("PT422") as bad:
        db.conn.execute("select ops.set_account_disabled(%s, null)", [address])
    assert detail(bad)["field"] == "disabled"
