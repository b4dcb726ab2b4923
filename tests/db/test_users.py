"""The signed-in user's profile (api.me, api.update_me) and addresses (api.addresses and its functions):
shapes, validation, row-level security (another user's address is exactly as missing), one default per
kind, also under concurrent requests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from gateway import db as gwdb
from tests.conftest import Session

USER_KEYS = {"id", "email", "full_name", "role", "created_at"}
ADDRESS_KEYS = {
    "id",
    "kind",
    "is_default",
    "full_name",
    "line1",
    "line2",
    "city",
    "region",
    "postal_code",
    "country",
    "phone",
    "created_at",
    "updated_at",
}
CREATE = "select api.create_address(%s, %s, %s, %s, %s, %s)"


def detail(info: pytest.ExceptionInfo[psycopg.Error]) -> dict[str, Any]:
    text = info.value.diag.message_detail
    assert text, f"no detail on {info.value}"
    parsed = json.loads(text)
    assert isinstance(parsed, dict)
    return parsed


def make_user(db: Session, email: str, full_name: str = "", role: str = "app_readwrite") -> int:
    db.as_superuser()
    user_id: int = db.one(
        "insert into core.users (email, full_name, role) values (%s, %s, %s) returning id",
        [email, full_name, role],
    )
    return user_id


def as_user(db: Session, user_id: int, role: str = "app_readwrite") -> None:
    db.as_role(role, db.claims(user_id, role))


def add_address(db: Session, kind: str = "shipping", is_default: bool = False, name: str = "Ada") -> Any:
    return db.one(
        "select api.create_address(kind => %s, full_name => %s, line1 => '1 Main St', city => 'Berlin',"
        " postal_code => '10115', country => 'de', is_default => %s)",
        [kind, name, is_default],
    )


@pytest.fixture
def alice(db: Session) -> int:
    return make_user(db, "alice@example.com", "Alice")


@pytest.fixture
def bob(db: Session) -> int:
    return make_user(db, "bob@example.com", "Bob")


# --- /me ---------------------------------------------------------------------------------------------


def test_me_returns_the_user_shape(db: Session, alice: int) -> None:
    as_user(db, alice)
    me = db.one("select api.me()")
    assert set(me) == USER_KEYS
    assert me["id"] == alice
    assert (me["email"], me["full_name"], me["role"]) == ("alice@example.com", "Alice", "app_readwrite")


def test_me_of_staff_is_their_own_row(db: Session, alice: int) -> None:
    admin = make_user(db, "staff@example.com", "Staff", role="app_admin")
    as_user(db, admin, "app_admin")
    assert db.one("select api.me() ->> 'email'") == "staff@example.com"


def test_me_without_a_user_is_401(db: Session) -> None:
    db.as_role("app_readwrite", {"role": "app_readwrite"})
    with db.raises("PT401") as info:
        db.one("select api.me()")
    assert detail(info) == {"code": "not_authenticated"}


def test_me_of_a_deleted_user_is_401(db: Session, alice: int) -> None:
    db.as_superuser()
    db.conn.execute("delete from core.users where id = %s", [alice])
    as_user(db, alice)
    with db.raises("PT401"):
        db.one("select api.me()")


def test_anonymous_cannot_call_me(db: Session) -> None:
    db.as_role("app_readonly")
    with db.raises("42501"):
        db.one("select api.me()")


def test_update_me_changes_only_what_is_sent(db: Session, alice: int) -> None:
    as_user(db, alice)
    me = db.one("select api.update_me(full_name => 'Alice Liddell')")
    assert set(me) == USER_KEYS
    assert (me["full_name"], me["email"]) == ("Alice Liddell", "alice@example.com")
    me = db.one("select api.update_me(email => '  Alice.L@Example.COM ')")
    assert (me["full_name"], me["email"]) == ("Alice Liddell", "alice.l@example.com")
    assert db.one("select api.update_me()") == me
    assert db.one("select api.me()") == me


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "a b@example.com", "", "x" * 250 + "@example.com"])
def test_update_me_refuses_an_invalid_email(db: Session, alice: int, email: str) -> None:
    as_user(db, alice)
    with db.raises("PT422") as info:
        db.one("select api.update_me(email => %s)", [email])
    assert detail(info)["code"] == "invalid_input"
    assert detail(info)["field"] == "email"


def test_update_me_refuses_a_too_long_name(db: Session, alice: int) -> None:
    as_user(db, alice)
    with db.raises("PT422") as info:
        db.one("select api.update_me(full_name => %s)", ["n" * 201])
    assert detail(info)["field"] == "full_name"


def test_update_me_refuses_an_email_taken_in_any_case(db: Session, alice: int, bob: int) -> None:
    as_user(db, alice)
    with db.raises("PT409") as info:
        db.one("select api.update_me(email => 'BOB@example.com')")
    assert detail(info)["code"] == "email_taken"
    assert db.one("select api.me() ->> 'email'") == "alice@example.com"


def test_update_me_touches_only_the_callers_row(db: Session, alice: int, bob: int) -> None:
    as_user(db, alice)
    db.one("select api.update_me(full_name => 'Changed')")
    db.as_superuser()
    assert db.one("select full_name from core.users where id = %s", [bob]) == "Bob"


def test_customers_cannot_read_core_users(db: Session, alice: int) -> None:
    as_user(db, alice)
    with db.raises("42501"):
        db.all("select * from core.users")


# --- addresses: shapes and validation -------------------------------------------------------------


def test_create_address_returns_201_with_location_and_the_shape(db: Session, alice: int) -> None:
    as_user(db, alice)
    address = db.one(
        "select api.create_address('shipping', ' Alice ', '1 Main St', 'Berlin', '10115', 'de',"
        " line2 => 'Apt 4', phone => '+49 30 1234')"
    )
    assert set(address) == ADDRESS_KEYS
    assert address["full_name"] == "Alice"
    assert address["country"] == "DE"
    assert (address["line2"], address["region"], address["phone"]) == ("Apt 4", "", "+49 30 1234")
    assert address["is_default"] is False
    assert db.one("select current_setting('response.status', true)") == "201"
    headers = json.loads(db.one("select current_setting('response.headers', true)"))
    assert headers == [{"Location": f"/me/addresses/{address['id']}"}]
    rows = db.all("select id, kind, country from api.addresses")
    assert rows == [(address["id"], "shipping", "DE")]


@pytest.mark.parametrize("country", ["XX", "DEU", "D", "", "1A", None])
def test_create_address_refuses_an_unknown_country(db: Session, alice: int, country: str | None) -> None:
    as_user(db, alice)
    with db.raises("PT422") as info:
        db.one(CREATE, ["shipping", "Alice", "1 Main St", "Berlin", "10115", country])
    assert detail(info)["code"] == "invalid_input"
    assert detail(info)["field"] == "country"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["home", "Alice", "1 Main St", "Berlin", "10115", "DE"], "kind"),
        (["shipping", "  ", "1 Main St", "Berlin", "10115", "DE"], "full_name"),
        (["shipping", "Alice", None, "Berlin", "10115", "DE"], "line1"),
        (["shipping", "Alice", "1 Main St", "", "10115", "DE"], "city"),
        (["shipping", "Alice", "1 Main St", "Berlin", "1" * 21, "DE"], "postal_code"),
        (["billing", "A" * 201, "1 Main St", "Berlin", "10115", "DE"], "full_name"),
    ],
)
def test_create_address_names_the_invalid_field(db: Session, alice: int, args: list[Any], field: str) -> None:
    as_user(db, alice)
    with db.raises("PT422") as info:
        db.one(CREATE, args)
    assert detail(info)["field"] == field


def test_update_address_changes_only_what_is_sent(db: Session, alice: int) -> None:
    as_user(db, alice)
    created = db.one(
        "select api.create_address('billing', 'Alice', '1 Main St', 'Paris', '75001', 'FR', line2 => 'Apt 4')"
    )
    updated = db.one(
        "select api.update_address(%s, city => 'Lyon', country => 'fr', line2 => '')", [created["id"]]
    )
    assert set(updated) == ADDRESS_KEYS
    assert (updated["city"], updated["country"], updated["line2"]) == ("Lyon", "FR", "")
    assert {k: v for k, v in updated.items() if k not in {"city", "line2", "updated_at"}} == {
        k: v for k, v in created.items() if k not in {"city", "line2", "updated_at"}
    }
    with db.raises("PT422") as info:
        db.one("select api.update_address(%s, city => '')", [created["id"]])
    assert detail(info)["field"] == "city"
    with db.raises("PT422") as info:
        db.one("select api.update_address(%s, country => 'ZZ')", [created["id"]])
    assert detail(info)["field"] == "country"


def test_delete_address_answers_204_and_removes_it(db: Session, alice: int) -> None:
    as_user(db, alice)
    address = add_address(db)
    assert db.one("select api.delete_address(%s)", [address["id"]]) is None
    assert db.one("select current_setting('response.status', true)") == "204"
    assert db.all("select id from api.addresses") == []
    with db.raises("PT404"):
        db.one("select api.delete_address(%s)", [address["id"]])


def test_anonymous_has_no_addresses(db: Session) -> None:
    db.as_role("app_readonly")
    with db.raises("42501"):
        db.all("select * from api.addresses")
    with db.raises("42501"):
        db.one(CREATE, ["shipping", "Alice", "1 Main St", "Berlin", "10115", "DE"])


# --- addresses: row-level security ----------------------------------------------------------------


@pytest.fixture
def alices_address(db: Session, alice: int) -> Iterator[dict[str, Any]]:
    as_user(db, alice)
    address = add_address(db, is_default=True)
    yield address
    # whatever bob tried, alice's address is untouched
    db.as_superuser()
    row = db.one("select core.address_json(a) from core.addresses as a where a.id = %s", [address["id"]])
    assert row == address


def not_found_detail(db: Session, call: str, address_id: int) -> dict[str, Any]:
    with db.raises("PT404") as info:
        db.one(call, [address_id])
    found = detail(info)
    assert found == {"code": "not_found", "resource": "address", "id": address_id}
    return {
        **found,
        "id": None,
        "message": info.value.diag.message_primary,
        "hint": info.value.diag.message_hint,
    }


@pytest.mark.parametrize(
    "call",
    [
        "select api.update_address(%s, city => 'Stolen')",
        "select api.update_address(%s, is_default => true)",
        "select api.delete_address(%s)",
    ],
)
def test_another_users_address_is_exactly_as_missing(
    db: Session, bob: int, alices_address: dict[str, Any], call: str
) -> None:
    as_user(db, bob)
    missing_id = alices_address["id"] + 1000
    assert not_found_detail(db, call, alices_address["id"]) == not_found_detail(db, call, missing_id)


def test_the_view_shows_only_the_callers_addresses(
    db: Session, bob: int, alices_address: dict[str, Any]
) -> None:
    as_user(db, bob)
    assert db.all("select id from api.addresses") == []
    assert db.all("select id from api.addresses where id = %s", [alices_address["id"]]) == []
    mine = add_address(db, is_default=True, name="Bob")
    assert db.all("select id, full_name from api.addresses") == [(mine["id"], "Bob")]


def test_staff_see_only_their_own_addresses_here(db: Session, alices_address: dict[str, Any]) -> None:
    admin = make_user(db, "staff@example.com", "Staff", role="app_admin")
    as_user(db, admin, "app_admin")
    assert db.all("select id from api.addresses") == []
    with db.raises("PT404"):
        db.one("select api.delete_address(%s)", [alices_address["id"]])


def test_customers_cannot_reach_core_addresses(db: Session, bob: int, alices_address: dict[str, Any]) -> None:
    as_user(db, bob)
    with db.raises("42501"):
        db.all("select * from core.addresses")
    with db.raises("42501"):
        db.conn.execute("delete from core.addresses")


# --- addresses: one default per kind --------------------------------------------------------------


def defaults(db: Session) -> list[tuple[str, str]]:
    return [
        (kind, name) for kind, name in db.all("select kind, full_name from api.addresses where is_default")
    ]


def test_a_new_default_replaces_the_previous_one_of_its_kind(db: Session, alice: int) -> None:
    as_user(db, alice)
    add_address(db, "shipping", is_default=True, name="S1")
    add_address(db, "billing", is_default=True, name="B1")
    add_address(db, "shipping", is_default=False, name="S2")
    assert sorted(defaults(db)) == [("billing", "B1"), ("shipping", "S1")]
    add_address(db, "shipping", is_default=True, name="S3")
    assert sorted(defaults(db)) == [("billing", "B1"), ("shipping", "S3")]
    assert db.one("select count(*) from api.addresses") == 4


def test_switching_the_default_by_update(db: Session, alice: int) -> None:
    as_user(db, alice)
    first = add_address(db, "shipping", is_default=True, name="S1")
    second = add_address(db, "shipping", name="S2")
    billing = add_address(db, "billing", is_default=True, name="B1")
    db.one("select api.update_address(%s, is_default => true)", [second["id"]])
    assert sorted(defaults(db)) == [("billing", "B1"), ("shipping", "S2")]
    db.one("select api.update_address(%s, is_default => true)", [first["id"]])
    assert sorted(defaults(db)) == [("billing", "B1"), ("shipping", "S1")]
    # the default shipping address becomes a billing one: it takes over as the billing default
    db.one("select api.update_address(%s, kind => 'billing')", [first["id"]])
    assert defaults(db) == [("billing", "S1")]
    db.one("select api.update_address(%s, is_default => false)", [first["id"]])
    assert defaults(db) == []
    db.one("select api.delete_address(%s)", [billing["id"]])
    assert db.one("select count(*) from api.addresses") == 2


def test_defaults_of_different_users_are_independent(db: Session, alice: int, bob: int) -> None:
    as_user(db, alice)
    add_address(db, "shipping", is_default=True, name="A")
    as_user(db, bob)
    add_address(db, "shipping", is_default=True, name="B")
    assert defaults(db) == [("shipping", "B")]
    as_user(db, alice)
    assert defaults(db) == [("shipping", "A")]


def test_concurrent_new_defaults_queue_instead_of_colliding(fresh_db: str) -> None:
    """Request 1 makes a default and has not committed; request 2 makes another default of the same kind
    and must wait for it, then succeed: exactly one default remains, the later one."""
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        user_id = setup.execute(
            "insert into core.users (email) values ('racer@example.com') returning id"
        ).fetchone()[0]  # type: ignore[index]
        settings = gwdb.parse_role_settings(setup.execute(gwdb.ROLE_SETTINGS_QUERY).fetchall())
    claims = {"sub": str(user_id), "role": "app_readwrite"}

    def begin_request(conn: psycopg.Connection[Any]) -> None:
        query, params = gwdb.request_context("app_readwrite", claims, settings)
        conn.execute("begin")
        conn.execute(query, params)

    create_default = (
        "select api.create_address('shipping', %s, '1 Main St', 'Berlin', '10115', 'DE', is_default => true)"
    )
    outcome: dict[str, Any] = {}
    with (
        psycopg.connect(fresh_db, autocommit=True) as first,
        psycopg.connect(fresh_db, autocommit=True) as second,
        psycopg.connect(fresh_db, autocommit=True) as watcher,
    ):
        begin_request(first)
        first.execute(create_default, ["first"])
        second_pid = second.info.backend_pid
        started = threading.Event()

        def second_request() -> None:
            try:
                begin_request(second)
                started.set()
                outcome["address"] = second.execute(create_default, ["second"]).fetchone()
                second.execute("commit")
            except psycopg.Error as error:  # reported to the main thread
                outcome["error"] = error
                second.execute("rollback")
            finally:
                started.set()

        thread = threading.Thread(target=second_request)
        thread.start()
        assert started.wait(10)
        # wait until the second request is blocked by the first one (a condition, not a delay)
        deadline = time.monotonic() + 10
        while thread.is_alive():
            blockers = watcher.execute("select pg_blocking_pids(%s)", [second_pid]).fetchone()
            if blockers and first.info.backend_pid in blockers[0]:
                break
            assert time.monotonic() < deadline, "the second request never waited for the first"
        first.execute("commit")
        thread.join(10)
        assert not thread.is_alive()

    assert "error" not in outcome, outcome.get("error")
    with psycopg.connect(fresh_db) as check:
        rows = check.execute(
            "select full_name from core.addresses where user_id = %s and is_default", [user_id]
        ).fetchall()
        total = check.execute("select count(*) from core.addresses where user_id = %s", [user_id]).fetchone()
    assert rows == [("second",)]
    assert total == (2,)
