"""The roles of docs/architecture.md ("Roles"): who can log in, who can become whom, timeouts, and PUBLIC
locked out."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Session, login_url

REQUEST_ROLES = ["app_readonly", "app_readwrite", "app_admin", "app_payments"]
PROJECT_SCHEMAS = ["core", "api", "auth", "billing", "ops", "audit"]


def test_only_authenticator_logs_in(db: Session) -> None:
    rows = db.all(
        "select rolname, rolcanlogin, rolinherit, rolsuper, rolbypassrls from pg_roles "
        "where rolname like 'app\\_%' or rolname = 'authenticator' order by rolname"
    )
    by_name = {name: (login, inherit, superuser, bypass) for name, login, inherit, superuser, bypass in rows}
    assert set(by_name) == {"app_owner", "app_dba", "authenticator", *REQUEST_ROLES}
    assert by_name["authenticator"] == (True, False, False, False)
    for name in set(by_name) - {"authenticator"}:
        assert by_name[name][0] is False, name
        assert by_name[name][2:] == (False, False), name


@pytest.mark.parametrize("role", REQUEST_ROLES)
def test_authenticator_can_become_each_request_role_and_inherits_nothing(db: Session, role: str) -> None:
    assert db.one("select pg_has_role('authenticator', %s, 'set')", [role]) is True
    assert db.one("select pg_has_role('authenticator', %s, 'usage')", [role]) is False


@pytest.mark.parametrize("role", ["app_owner", "app_dba"])
def test_authenticator_cannot_become_owner_or_dba(db: Session, role: str) -> None:
    assert db.one("select pg_has_role('authenticator', %s, 'member')", [role]) is False


def test_authenticator_login_can_switch_to_request_roles_only(
    test_db: str, authenticator_password: str
) -> None:
    # SET ROLE checks the session user's memberships, so this needs a real authenticator login
    with psycopg.connect(login_url(test_db, "authenticator", authenticator_password)) as conn:
        conn.execute("set role app_readwrite")
        assert conn.execute("select current_user").fetchone() == ("app_readwrite",)
        for forbidden in ("app_owner", "app_dba", "postgres"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("set role {}").format(sql.Identifier(forbidden)))
            conn.rollback()


@pytest.mark.parametrize("role", ["authenticator", "app_dba", *REQUEST_ROLES])
def test_every_role_has_a_statement_timeout(db: Session, role: str) -> None:
    timeout = db.one(
        "select c from pg_db_role_setting s, unnest(s.setconfig) c "
        "where s.setrole = %s::regrole and c like 'statement_timeout=%%'",
        [role],
    )
    assert timeout.startswith("statement_timeout=")


def test_request_context_applies_the_role_timeout(db: Session) -> None:
    db.as_role("app_readonly")
    assert db.one("select current_user") == "app_readonly"
    assert db.one("show statement_timeout") == "3s"
    db.as_role("app_admin")
    assert db.one("show statement_timeout") == "15s"


def test_role_timeout_cuts_a_runaway_statement(db: Session) -> None:
    db.as_role("app_readonly")
    db.conn.execute("select set_config('statement_timeout', '50ms', true)")
    with db.raises("57014"):
        db.conn.execute("select pg_sleep(1)")


@pytest.mark.parametrize("schema", PROJECT_SCHEMAS)
def test_public_has_no_privilege_on_project_schemas(db: Session, schema: str) -> None:
    assert db.one("select has_schema_privilege('public', %s, 'usage')", [schema]) is False
    assert db.one("select has_schema_privilege('public', %s, 'create')", [schema]) is False


def test_public_cannot_connect(db: Session) -> None:
    assert db.one("select has_database_privilege('public', current_database(), 'connect')") is False
    assert db.one("select has_database_privilege('authenticator', current_database(), 'connect')") is True


def test_functions_of_the_owner_are_not_executable_by_public(db: Session) -> None:
    db.conn.execute("set local role app_owner")
    db.conn.execute("create function api.probe() returns int language sql as 'select 1'")
    db.as_superuser()
    assert db.one("select has_function_privilege('public', 'api.probe()', 'execute')") is False
    assert db.one("select has_function_privilege('app_readonly', 'api.probe()', 'execute')") is False


def test_schemas_are_owned_by_app_owner(db: Session) -> None:
    owners = db.all(
        "select nspname, pg_get_userbyid(nspowner) from pg_namespace where nspname = any(%s) order by 1",
        [PROJECT_SCHEMAS],
    )
    assert owners == [(name, "app_owner") for name in sorted(PROJECT_SCHEMAS)]
