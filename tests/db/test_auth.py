"""The gateway's auth internals at SQL level: signup, login lookup and the per-client delay after failures,
sessions (with their role), password change, JWT claims, and who may call them (the gateway's login only,
before it switches role)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import argon2
import psycopg
import pytest

from tests.conftest import Session

REQUEST_ROLES = ["app_readonly", "app_readwrite", "app_admin", "app_payments"]
USER_KEYS = {"id", "email", "full_name", "role", "created_at"}
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def password_hash() -> str:
    return argon2.PasswordHasher().hash(PASSWORD)


def detail(info: pytest.ExceptionInfo[psycopg.Error]) -> dict[str, Any]:
    parsed = json.loads(info.value.diag.message_detail or "null")
    assert isinstance(parsed, dict), info.value
    return parsed


def superuser(db: Session) -> None:
    db.conn.execute("reset session authorization")
    db.as_superuser()


def as_gateway(db: Session) -> None:
    """The gateway's own login before any SET ROLE: current_user authenticator, request_role() 'none'."""
    superuser(db)
    db.conn.execute("set local session authorization authenticator")
    assert db.one("select current_user") == "authenticator"


def register(db: Session, email: str, password_hash: str, full_name: str = "") -> dict[str, Any]:
    as_gateway(db)
    user: dict[str, Any] = db.one("select auth.register_user(%s, %s, %s)", [email, full_name, password_hash])
    return user


CLIENT = "192.0.2.10"


def fail(db: Session, email: str, client: str = CLIENT, **options: Any) -> tuple[int, timedelta | None]:
    """One failure of (email, client): the pair's count and how long its next attempt must wait."""
    args = "".join(f", {name} => %s" for name in options)
    row = db.all(
        f"select failed_attempts, retry_at - now() from auth.record_login_failure(%s, %s::inet{args})",
        [email, client, *options.values()],
    )
    assert len(row) == 1
    return row[0][0], row[0][1]


def delay(db: Session, email: str, client: str = CLIENT) -> list[tuple[Any, ...]]:
    return db.all(
        "select failed_attempts, retry_at - now() from auth.login_delay(%s, %s::inet)", [email, client]
    )


def new_session(db: Session, user_id: int, expires_in: timedelta = timedelta(hours=1)) -> uuid.UUID:
    jti = uuid.uuid4()
    db.conn.execute("select auth.create_session(%s, %s, now() + %s, 'pytest')", [user_id, jti, expires_in])
    return jti


def active(db: Session, jti: uuid.UUID, user_id: int, role: str = "app_readwrite") -> bool:
    result: bool = db.one("select auth.session_active(%s, %s, %s)", [jti, user_id, role])
    return result


# --- signup ----------------------------------------------------------------------------------------


def test_the_gateway_runs_as_a_service(db: Session) -> None:
    as_gateway(db)
    # what core.request_role() reads: 'none', which core.is_service() counts as a service
    assert db.one("select current_setting('role')") == "none"


def test_register_returns_the_user_shape_and_stores_the_hash(db: Session, password_hash: str) -> None:
    user = register(db, "  New.User@Example.COM ", password_hash, " New User ")
    assert set(user) == USER_KEYS
    assert (user["email"], user["full_name"], user["role"]) == (
        "new.user@example.com",
        "New User",
        "app_readwrite",
    )
    superuser(db)
    stored = db.one("select password_hash from auth.credentials where user_id = %s", [user["id"]])
    assert stored == password_hash
    assert argon2.PasswordHasher().verify(stored, PASSWORD)


def test_register_refuses_a_taken_email_in_any_case(db: Session, password_hash: str) -> None:
    register(db, "taken@example.com", password_hash)
    with db.raises("PT409") as info:
        db.one("select auth.register_user('TAKEN@example.com', '', %s)", [password_hash])
    assert detail(info)["code"] == "email_taken"


@pytest.mark.parametrize("email", ["nobody", "a@b", "", None])
def test_register_refuses_an_invalid_email(db: Session, password_hash: str, email: str | None) -> None:
    as_gateway(db)
    with db.raises("PT422") as info:
        db.one("select auth.register_user(%s, '', %s)", [email, password_hash])
    assert detail(info) | {"reason": None} == {"code": "invalid_input", "field": "email", "reason": None}


@pytest.mark.parametrize(
    "not_a_hash",
    [
        PASSWORD,
        "",
        "$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",  # argon2i, not argon2id
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=65536,t=3,p=4$" + PASSWORD,  # the prefix alone is not a hash
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$",  # no digest
    ],
)
def test_the_database_refuses_anything_but_an_argon2id_hash(db: Session, not_a_hash: str) -> None:
    as_gateway(db)
    with db.raises("23514") as info:
        db.one("select auth.register_user('plain@example.com', '', %s)", [not_a_hash])
    assert info.value.diag.constraint_name == "credentials_password_hash_check"
    # nothing of the failed signup remains
    superuser(db)
    assert db.one("select count(*) from core.users where email = 'plain@example.com'") == 0


def test_change_password_refuses_a_plain_password(db: Session, password_hash: str) -> None:
    user = register(db, "user@example.com", password_hash)
    with db.raises("23514"):
        db.one("select auth.change_password(%s, %s)", [user["id"], PASSWORD])
    superuser(db)
    with db.raises("23514"):
        db.conn.execute(
            "update auth.credentials set password_hash = %s where user_id = %s", [PASSWORD, user["id"]]
        )


def test_register_always_makes_a_customer(db: Session, password_hash: str) -> None:
    arguments = db.one(
        "select pg_get_function_arguments('auth.register_user(text, text, text)'::regprocedure)"
    )
    assert arguments == "email text, full_name text, password_hash text", "no way to ask for another role"
    assert register(db, "c@example.com", password_hash)["role"] == "app_readwrite"


# --- login lookup and the delay after failures ------------------------------------------------------


def test_login_lookup(db: Session, password_hash: str) -> None:
    user = register(db, "login@example.com", password_hash)
    rows = db.all("select user_id, role, password_hash from auth.login_lookup(' LOGIN@example.com ')")
    assert rows == [(user["id"], "app_readwrite", password_hash)]
    assert db.all("select * from auth.login_lookup('nobody@example.com')") == []


def test_free_attempts_then_a_doubling_delay_up_to_the_cap(db: Session, password_hash: str) -> None:
    register(db, "victim@example.com", password_hash)
    assert delay(db, "victim@example.com") == []
    seconds = timedelta(seconds=1)
    outcomes = [fail(db, "Victim@example.com ") for _ in range(10)]
    assert outcomes == [
        (1, None),
        (2, None),
        (3, 5 * seconds),
        (4, 10 * seconds),
        (5, 20 * seconds),
        (6, 40 * seconds),
        (7, 80 * seconds),
        (8, 160 * seconds),
        (9, 320 * seconds),
        (10, 640 * seconds),
    ]
    assert fail(db, "victim@example.com") == (11, timedelta(minutes=15))
    assert fail(db, "victim@example.com") == (12, timedelta(minutes=15))
    assert delay(db, "victim@example.com") == [(12, timedelta(minutes=15))]


def test_the_delay_concerns_one_client_only(db: Session, password_hash: str) -> None:
    """No lockout: a guesser at one address leaves the owner's other addresses free."""
    user = register(db, "owner@example.com", password_hash)
    for _ in range(20):
        fail(db, "owner@example.com", "192.0.2.66")
    assert delay(db, "owner@example.com", "192.0.2.66")[0][1] > timedelta(0)
    assert delay(db, "owner@example.com", "192.0.2.1") == []
    # the owner's success from elsewhere forgets only the owner's own pair
    fail(db, "owner@example.com", "192.0.2.1")
    db.conn.execute("select auth.record_login_success(%s, '192.0.2.1')", [user["id"]])
    assert delay(db, "owner@example.com", "192.0.2.1") == []
    assert delay(db, "owner@example.com", "192.0.2.66")[0][0] == 20


def test_delay_options_and_their_checks(db: Session, password_hash: str) -> None:
    register(db, "opts@example.com", password_hash)
    options = {"free_attempts": 1, "delay_base": timedelta(seconds=2), "delay_max": timedelta(seconds=5)}
    assert fail(db, "opts@example.com", **options) == (1, timedelta(seconds=2))
    assert fail(db, "opts@example.com", **options) == (2, timedelta(seconds=4))
    assert fail(db, "opts@example.com", **options) == (3, timedelta(seconds=5))
    # a huge count never overflows the interval arithmetic
    superuser(db)
    db.conn.execute("update auth.login_failures set failed_attempts = 2000000000 - 1")
    as_gateway(db)
    assert fail(db, "opts@example.com", **options)[1] == timedelta(seconds=5)
    for bad in (
        {"free_attempts": 0},
        {"delay_base": timedelta(0)},
        {"delay_base": timedelta(minutes=2), "delay_max": timedelta(minutes=1)},
    ):
        with db.raises("22023"):
            fail(db, "opts@example.com", **bad)
    with db.raises("22023"):
        db.all("select * from auth.record_login_failure('opts@example.com', null)")


def test_a_pair_idle_for_a_day_starts_a_new_count(db: Session, password_hash: str) -> None:
    register(db, "again@example.com", password_hash)
    for _ in range(5):
        fail(db, "again@example.com")
    superuser(db)
    db.conn.execute(
        "update auth.login_failures set last_failed_at = now() - interval '25 hours',"
        " retry_at = now() - interval '24 hours'"
    )
    as_gateway(db)
    assert delay(db, "again@example.com") == []
    assert fail(db, "again@example.com") == (1, None)


def test_unknown_addresses_are_counted_the_same_way(db: Session, password_hash: str) -> None:
    register(db, "known@example.com", password_hash)
    known = [fail(db, "known@example.com") for _ in range(6)]
    unknown = [fail(db, "Unknown@example.com") for _ in range(6)]
    assert unknown == known
    superuser(db)
    # only a hash of the address is kept
    assert (
        db.one("select count(*) from auth.login_failures where email_hash = sha256('unknown@example.com')")
        == 1
    )
    assert db.one("select count(*) from auth.login_failures where email_hash::text like '%%unknown%%'") == 0


def test_registering_forgets_failures_of_the_unknown_address(db: Session, password_hash: str) -> None:
    as_gateway(db)
    fail(db, "later@example.com", "192.0.2.1")
    fail(db, "later@example.com", "2001:db8::/64")
    register(db, "later@example.com", password_hash)
    superuser(db)
    assert db.one("select count(*) from auth.login_failures") == 0


# --- sessions ------------------------------------------------------------------------------------------


def test_sessions_active_revoked_expired_and_foreign(db: Session, password_hash: str) -> None:
    alice = register(db, "alice@example.com", password_hash)["id"]
    bob = register(db, "bob@example.com", password_hash)["id"]
    jti = new_session(db, alice)
    assert active(db, jti, alice) is True
    assert active(db, jti, bob) is False, "another user's jti"
    assert active(db, uuid.uuid4(), alice) is False, "unknown jti"

    expired = new_session(db, alice)
    superuser(db)
    db.conn.execute(
        "update auth.sessions set issued_at = now() - interval '2 hours',"
        " expires_at = now() - interval '1 second' where jti = %s",
        [expired],
    )
    as_gateway(db)
    assert active(db, expired, alice) is False, "expired"

    assert db.one("select auth.revoke_session(%s)", [jti]) is True
    assert active(db, jti, alice) is False, "revoked"
    assert db.one("select auth.revoke_session(%s)", [jti]) is False, "already revoked"
    assert db.one("select auth.revoke_session(%s)", [uuid.uuid4()]) is False


def test_a_session_is_active_only_with_the_role_it_was_issued_with(db: Session, password_hash: str) -> None:
    customer = register(db, "role@example.com", password_hash)["id"]
    jti = new_session(db, customer)
    superuser(db)
    assert db.one("select role from auth.sessions where jti = %s", [jti]) == "app_readwrite"
    as_gateway(db)
    assert active(db, jti, customer, "app_readwrite") is True
    assert active(db, jti, customer, "app_admin") is False, "a role claim the session was not issued with"
    # the role is the user's at issue time: a staff member's new session carries app_admin
    superuser(db)
    db.conn.execute("update core.users set role = 'app_admin' where id = %s", [customer])
    as_gateway(db)
    staff = new_session(db, customer)
    assert active(db, staff, customer, "app_admin") is True
    assert active(db, staff, customer, "app_readwrite") is False
    superuser(db)
    with db.raises("23514"):
        db.conn.execute("update auth.sessions set role = 'postgres' where jti = %s", [staff])


def test_session_active_is_a_stable_primary_key_lookup(db: Session, password_hash: str) -> None:
    """The plan of the function's own statement (auto_explain), not of a copy of it."""
    assert (
        db.one(
            "select provolatile from pg_proc"
            " where oid = 'auth.session_active(uuid, bigint, text)'::regprocedure"
        )
        == "s"
    )
    user = register(db, "fast@example.com", password_hash)["id"]
    jti = new_session(db, user)
    superuser(db)
    plans: list[str] = []
    db.conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    db.conn.execute("load 'auto_explain'")
    db.conn.execute(
        "select set_config('auto_explain.log_min_duration', '0', true),"
        " set_config('auto_explain.log_nested_statements', 'on', true),"
        " set_config('enable_seqscan', 'off', true), set_config('client_min_messages', 'log', true)"
    )
    assert db.one("select auth.session_active(%s, %s, 'app_readwrite')", [jti, user]) is True
    db.conn.execute("select set_config('client_min_messages', 'notice', true)")
    inner = [plan for plan in plans if "from auth.sessions" in plan]
    assert len(inner) == 1, plans
    assert "Index Scan using sessions_pkey on sessions" in inner[0]
    assert "Seq Scan" not in inner[0]


def test_create_session_cuts_the_user_agent_and_needs_a_future_expiry(
    db: Session, password_hash: str
) -> None:
    user = register(db, "agent@example.com", password_hash)["id"]
    jti = uuid.uuid4()
    db.conn.execute(
        "select auth.create_session(%s, %s, now() + interval '1 hour', %s)", [user, jti, "x" * 600]
    )
    superuser(db)
    assert db.one("select length(user_agent) from auth.sessions where jti = %s", [jti]) == 500
    as_gateway(db)
    with db.raises("23514"):
        db.conn.execute("select auth.create_session(%s, %s, now() - interval '1 hour')", [user, uuid.uuid4()])
    with db.raises("23503"):
        db.conn.execute("select auth.create_session(-1, %s, now() + interval '1 hour')", [uuid.uuid4()])


def test_change_password_revokes_every_session(db: Session, password_hash: str) -> None:
    alice = register(db, "alice@example.com", password_hash)["id"]
    bob = register(db, "bob@example.com", password_hash)["id"]
    alices = [new_session(db, alice) for _ in range(3)]
    db.conn.execute("select auth.revoke_session(%s)", [alices[0]])
    bobs = new_session(db, bob)
    new_hash = argon2.PasswordHasher().hash("another long passphrase")
    assert db.one("select auth.change_password(%s, %s)", [alice, new_hash]) == 2
    assert [active(db, jti, alice) for jti in alices] == [False, False, False]
    assert active(db, bobs, bob) is True, "other users keep their sessions"
    assert db.all("select password_hash from auth.login_lookup('alice@example.com')") == [(new_hash,)]
    fresh = new_session(db, alice)
    assert active(db, fresh, alice) is True


def test_revoke_user_sessions(db: Session, password_hash: str) -> None:
    user = register(db, "everywhere@example.com", password_hash)["id"]
    sessions = [new_session(db, user) for _ in range(2)]
    assert db.one("select auth.revoke_user_sessions(%s)", [user]) == 2
    assert not any(active(db, jti, user) for jti in sessions)


def test_user_claims(db: Session, password_hash: str) -> None:
    user = register(db, "claims@example.com", password_hash)
    claims = db.one("select auth.user_claims(%s)", [user["id"]])
    assert claims == {"sub": str(user["id"]), "role": "app_readwrite", "email": "claims@example.com"}
    assert db.one("select auth.user_claims(-1)") is None


# --- set_user_role (staff) ------------------------------------------------------------------------------


def test_staff_change_a_role_and_the_old_tokens_stop_working(db: Session, password_hash: str) -> None:
    customer = register(db, "promoted@example.com", password_hash)["id"]
    jti = new_session(db, customer)
    superuser(db)
    admin = db.one(
        "insert into core.users (email, role) values ('boss@example.com', 'app_admin') returning id"
    )
    db.as_role("app_admin", db.claims(admin, "app_admin"))
    user = db.one("select api.set_user_role(%s, 'app_admin')", [customer])
    assert set(user) == USER_KEYS
    assert user["role"] == "app_admin"
    as_gateway(db)
    assert active(db, jti, customer) is False
    assert db.one("select auth.user_claims(%s) ->> 'role'", [customer]) == "app_admin"

    db.as_role("app_admin", db.claims(admin, "app_admin"))
    with db.raises("PT422") as info:
        db.one("select api.set_user_role(%s, 'postgres')", [customer])
    assert detail(info)["field"] == "role"
    with db.raises("PT404"):
        db.one("select api.set_user_role(-1, 'app_readwrite')")
    with db.raises("PT409"):
        db.one("select api.set_user_role(%s, 'app_readwrite')", [admin])


def test_customers_cannot_change_roles(db: Session, password_hash: str) -> None:
    customer = register(db, "sneaky@example.com", password_hash)["id"]
    db.as_role("app_readwrite", db.claims(customer))
    with db.raises("42501"):
        db.one("select api.set_user_role(%s, 'app_admin')", [customer])


# --- who may call the auth functions ---------------------------------------------------------------


def auth_functions(db: Session) -> list[str]:
    rows = db.all(
        "select p.oid::regprocedure::text from pg_proc as p"
        " where p.pronamespace = 'auth'::regnamespace order by 1"
    )
    names = [name for (name,) in rows]
    assert "auth.session_active(uuid,bigint,text)" in names
    return names


@pytest.mark.parametrize("role", [*REQUEST_ROLES, "app_dba", "public"])
def test_no_request_role_can_execute_an_auth_function(db: Session, role: str) -> None:
    allowed = [
        name
        for name in auth_functions(db)
        if db.one("select has_function_privilege(%s, %s, 'execute')", [role, name])
    ]
    assert allowed == []


def test_authenticator_executes_every_auth_function_as_definer(db: Session) -> None:
    rows = db.all(
        "select p.oid::regprocedure::text, has_function_privilege('authenticator', p.oid, 'execute'),"
        " p.prosecdef, p.proconfig from pg_proc as p where p.pronamespace = 'auth'::regnamespace"
    )
    assert rows
    for name, can_execute, definer, config in rows:
        assert (can_execute, definer, config) == (True, True, ["search_path=pg_catalog, pg_temp"]), name


@pytest.mark.parametrize("role", REQUEST_ROLES)
def test_a_request_role_is_refused_at_call_time(db: Session, password_hash: str, role: str) -> None:
    register(db, "target@example.com", password_hash)
    db.as_role(role, db.claims(1, role) if role in {"app_readwrite", "app_admin"} else {})
    with db.raises("42501"):
        db.all("select * from auth.login_lookup('target@example.com')")
    with db.raises("42501"):
        db.all("select * from auth.credentials")
