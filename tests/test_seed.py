"""`demo seed`: the demo catalog is deterministic and idempotent; the generator keeps stock = ledger."""

from __future__ import annotations

import psycopg
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner
from psycopg import sql

from commercecore.cli import main
from commercecore.local import devstack, seed

LEDGER_MISMATCHES = """
select count(*)
from core.products as p
left join (
  select product_id, sum(delta) as total from core.inventory_movements group by product_id
) as l on l.product_id = p.id
where p.stock <> coalesce(l.total, 0)
"""


def test_demo_seed_is_deterministic_and_idempotent(fresh_db: str) -> None:
    first = seed.seed_demo(fresh_db)
    second = seed.seed_demo(fresh_db)
    assert first == {"products": len(seed.demo_products()), "users": len(seed.DEMO_USERS)}
    assert second == {"products": 0, "users": 0}
    assert seed.demo_products() == seed.demo_products()
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute(LEDGER_MISMATCHES).fetchone() == (0,)
        rows = conn.execute(
            "select u.email, u.role, c.password_hash "
            "from core.users as u join auth.credentials as c on c.user_id = u.id"
        ).fetchall()
    hasher = PasswordHasher()
    passwords = {email: (password, role) for email, password, _name, role in seed.DEMO_USERS}
    assert {email for email, _role, _hash in rows} == set(passwords)
    for email, role, password_hash in rows:
        assert role == passwords[email][1]
        assert hasher.verify(password_hash, passwords[email][0])


def test_generator_appends_products_with_matching_ledger(fresh_db: str) -> None:
    assert seed.generate_products(fresh_db, 1500, batch=400) == 1500
    assert seed.generate_products(fresh_db, 500) == 500
    with psycopg.connect(fresh_db) as conn:
        count, first, last = conn.execute(
            "select count(*), min(sku), max(sku) from core.products where sku like 'GEN-%'"
        ).fetchone() or (0, "", "")
        assert (count, first, last) == (2000, "GEN-000000001", "GEN-000002000")
        assert conn.execute(LEDGER_MISMATCHES).fetchone() == (0,)
        bulk = conn.execute(
            "select new_row ->> 'generated' from audit.log where request_id = 'demo-generate' order by id"
        ).fetchall()
        assert bulk == [("1500",), ("500",)]
        searchable = conn.execute(
            "select count(*) from core.products where search @@ to_tsquery('english', 'espresso')"
        ).fetchone()
        assert searchable is not None
        assert searchable[0] > 0


def _mark_not_embedded(url: str) -> None:
    """The database answers like a shop's own server: `commercecore.embedded` off."""
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter database {} set commercecore.embedded = off").format(sql.Identifier(dbname))
        )


def _users(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from core.users").fetchone()
    assert row is not None
    return int(row[0])


def test_the_embedded_cluster_says_so(fresh_db: str) -> None:
    seed.require_embedded(fresh_db)


def test_demo_seed_refuses_a_server_that_is_not_embedded(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mark_not_embedded(fresh_db)
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    refused = CliRunner().invoke(main, ["demo", "seed"])
    assert refused.exit_code == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert "--force" in lines[0]
    assert _users(fresh_db) == 0, "nothing is seeded"

    forced = CliRunner().invoke(main, ["demo", "seed", "--force"])
    assert forced.exit_code == 0, forced.output
    assert _users(fresh_db) == len(seed.DEMO_USERS)


def test_make_run_refuses_to_put_demo_users_into_a_server_that_is_not_embedded(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mark_not_embedded(fresh_db)
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    with pytest.raises(devstack.DevStackError, match="--force"):
        devstack.prepare()
    assert _users(fresh_db) == 0
