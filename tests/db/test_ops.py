"""Operations: expiry of unpaid orders (restock through the ledger), the daily sales report, and the
monitoring views a DBA reads (app_dba, member of pg_monitor)."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import Session
from tests.db.shop import shop_setting
from tests.db.test_billing import attach, begin, call, complete, new_order, new_product, new_user

LEDGER_MISMATCHES = """
select count(*)
from core.products as p
left join (select product_id, sum(delta) as total from core.inventory_movements group by product_id) as l
  on l.product_id = p.id
where p.stock <> coalesce(l.total, 0)
"""


def as_dba(db: Session) -> None:
    """app_dba is no request role of the gateway: a DBA's session sets it directly."""
    db.as_superuser()
    db.conn.execute("set local role app_dba")


def stock(db: Session, product_id: int) -> int:
    return int(db.one("select stock from core.products where id = %s", [product_id]))


def order_state(db: Session, order_id: int) -> tuple[Any, ...]:
    return db.all("select status, cancel_reason from core.orders where id = %s", [order_id])[0]


def test_expiry_cancels_and_restocks_only_stale_unpaid_orders(db: Session) -> None:
    # the rules before the maximum age (tests/ops/test_order_expiry.py has what happens at it)
    shop_setting(db.conn, "commercecore.order_max_unpaid_age", "1 day")
    user = new_user(db.conn)
    product = new_product(db.conn, price_minor=100, stock=100)
    other = new_product(db.conn, price_minor=250, stock=50)

    def order(quantity: int, age: str = "2 hours") -> int:
        return new_order(db.conn, user, [(product, quantity), (other, 1)], age=age)

    stale = order(3)  # nobody ever paid: expires
    fresh = order(4, age="5 minutes")  # within the ttl: kept
    paying = order(5)  # a checkout started a minute ago: kept
    begin(db, paying)
    session_open = order(6)  # an older attempt whose Stripe session is still open: kept
    live = begin(db, session_open)["payment_id"]
    attach(db, live)
    abandoned = order(7)  # its checkout session expired long ago: expires, the attempt with it
    dead = begin(db, abandoned)["payment_id"]
    attach(db, dead)
    never_attached = order(8)  # an attempt without a session, started long ago: expires, attempt canceled
    created = begin(db, never_attached)["payment_id"]
    paid = order(9)  # paid: kept
    paid_attempt = begin(db, paid)["payment_id"]
    complete(db, paid_attempt, 900 + 250)
    refunding = order(10)  # money arrived for a superseded attempt: kept for staff
    superseded = begin(db, refunding)["payment_id"]
    begin(db, refunding)
    assert complete(db, superseded, 1000 + 250)["outcome"] == "refund_required"

    db.conn.execute(
        "update core.payments set created_at = now() - interval '2 hours' where id = any(%s)",
        [[live, dead, created, superseded]],
    )
    db.conn.execute(
        "update core.payments set created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 hour' where id = %s",
        [dead],
    )
    db.conn.execute("update core.payments set expires_at = now() + interval '1 hour' where id = %s", [live])
    before = stock(db, product), stock(db, other)

    as_dba(db)
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 3
    assert db.one("select ops.expire_unpaid_orders('30 minutes')") == 0  # nothing left to do
    db.as_superuser()

    for expired in (stale, abandoned, never_attached):
        assert order_state(db, expired) == ("cancelled", "expired")
    for kept in (fresh, paying, session_open, refunding):
        assert order_state(db, kept) == ("pending", None)
    assert order_state(db, paid) == ("paid", None)
    assert stock(db, product) == before[0] + 3 + 7 + 8
    assert stock(db, other) == before[1] + 3
    assert db.one(LEDGER_MISMATCHES) == 0
    restocked = db.all(
        "select order_id, sum(delta) from core.inventory_movements where reason = 'order_expired' "
        "and product_id = %s group by order_id order by order_id",
        [product],
    )
    assert restocked == [(stale, 3), (abandoned, 7), (never_attached, 8)]
    attempts = db.all(
        "select id, status, failure_reason from core.payments where id = any(%s) order by id",
        [[live, dead, created]],
    )
    assert attempts == [
        (live, "open", None),
        (dead, "expired", "order_expired"),
        (created, "canceled", "order_expired"),
    ]


def test_a_success_after_expiry_is_refunded(db: Session) -> None:
    shop_setting(db.conn, "commercecore.order_max_unpaid_age", "1 day")  # stale after the ttl only
    user = new_user(db.conn)
    order = new_order(db.conn, user, [(new_product(db.conn, price_minor=500), 1)], age="3 hours")
    payment = begin(db, order)["payment_id"]
    db.conn.execute(
        "update core.payments set created_at = now() - interval '3 hours' where id = %s", [payment]
    )
    as_dba(db)
    assert db.one("select ops.expire_unpaid_orders('1 hour')") == 1
    db.as_superuser()
    late = complete(db, payment, 500)
    assert (late["outcome"], late["reason"]) == ("refund_required", "order_not_pending")


def test_expiry_skips_orders_busy_in_another_transaction(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        user = new_user(conn)
        busy = new_order(conn, user, [(new_product(conn), 1)], age="2 hours")
        idle = new_order(conn, user, [(new_product(conn), 1)], age="2 hours")
    with psycopg.connect(fresh_db) as holder, psycopg.connect(fresh_db) as job:
        holder.execute("select 1 from core.orders where id = %s for update", [busy])
        job.execute("set role app_dba")
        job.execute("set lock_timeout = '2s'")  # a wait would fail the test instead of hanging it
        assert job.execute("select ops.expire_unpaid_orders('1 hour')").fetchone() == (1,)
        job.commit()
        holder.rollback()
        job.execute("reset role")
        statuses = dict(
            job.execute("select id, status from core.orders where id = any(%s)", [[busy, idle]]).fetchall()
        )
    assert statuses == {busy: "pending", idle: "cancelled"}


def test_expiry_is_for_dbas(db: Session) -> None:
    db.as_role("app_admin", db.claims(1, "app_admin"))
    with db.raises("42501"):
        db.conn.execute("select ops.expire_unpaid_orders()")
    as_dba(db)
    with db.raises("PT422"):
        db.conn.execute("select ops.expire_unpaid_orders('-1 minute')")


def test_sales_daily_refreshes_concurrently(db: Session) -> None:
    user = new_user(db.conn)
    product = new_product(db.conn, price_minor=1000, currency="XTS")
    orders = [new_order(db.conn, user, [(product, n)], currency="XTS") for n in (1, 2, 3)]
    payments = [begin(db, order)["payment_id"] for order in orders[:2]]
    for order, payment in zip(orders, payments, strict=False):
        complete(db, payment, db.one("select total_minor from core.orders where id = %s", [order]), "XTS")
    refund = call(db, "select billing.request_refund(%s, 500)", payments[0])
    call(db, "select billing.attach_refund(%s, 're_report')", refund["refund_id"])
    call(db, "select billing.mark_refund_succeeded('re_report', 500)")

    as_dba(db)
    db.conn.execute("select ops.refresh_sales_daily()")
    rows = db.all(
        "select day = (now() at time zone 'UTC')::date, orders_paid, revenue_minor, refunded_minor, units "
        "from ops.sales_daily where currency = 'XTS'"
    )
    assert rows == [(True, 2, 3000, 500, 3)]
    unique = db.one(
        "select count(*) from pg_index "
        "where indrelid = 'ops.sales_daily'::regclass and indisunique and indpred is null"
    )
    assert unique == 1  # what REFRESH ... CONCURRENTLY requires

    db.as_role("app_admin", db.claims(user, "app_admin"))
    assert db.one("select count(*) from ops.sales_daily where currency = 'XTS'") == 1
    with db.raises("42501"):
        db.conn.execute("select ops.refresh_sales_daily()")


def test_monitoring_views_answer_for_app_dba(db: Session) -> None:
    db.conn.execute("select count(*) from core.orders where status = 'pending'")  # something to report
    # nothing may depend on what pg_stat_statements grants PUBLIC (the privilege matrix revokes it)
    db.conn.execute("revoke all on function ops.pg_stat_statements(boolean) from public")
    db.conn.execute("revoke all on ops.pg_stat_statements from public")
    as_dba(db)
    assert db.one("select pg_has_role('app_dba', 'pg_monitor', 'member')") is True

    top = db.all(
        "select query, calls, total_exec_ms, mean_exec_ms, rows, shared_blks_hit_ratio from ops.top_queries"
    )
    assert top, "pg_stat_statements recorded nothing"
    assert [row[2] for row in top] == sorted((row[2] for row in top), reverse=True)
    assert all(row[0] != "<insufficient privilege>" for row in top)
    # the same, straight from pg_stat_statements, as pg_monitor allows
    assert db.one("select count(*) > 0 from ops.pg_stat_statements(true) where total_exec_time > 0") is True

    indexes = {
        row[0]: row[1:]
        for row in db.all("select index_name, is_primary, unused, index_size_bytes from ops.index_usage")
    }
    assert indexes["orders_pkey"][0] is True
    assert indexes["orders_pkey"][1] is False  # a primary key is never a candidate to drop
    assert db.one("select count(*) > 0 from pg_stat_user_indexes where schemaname = 'core'") is True

    bloat = db.all("select table_name, table_len, dead_tuple_percent from ops.table_bloat('core.orders')")
    assert len(bloat) == 1
    assert bloat[0][0] == "core.orders"
    # app_dba may not resolve names in core; by oid, pgstattuple_approx and the regclass form both answer
    orders_oid = db.one(
        "select relid from pg_stat_user_tables where schemaname = 'core' and relname = 'orders'"
    )
    assert db.one("select count(*) from ops.pgstattuple_approx(%s::oid::regclass)", [orders_oid]) == 1
    assert db.one("select table_len from ops.table_bloat(%s::oid::regclass)", [orders_oid]) == bloat[0][1]

    ratios = db.all("select database_name, database_hit_ratio from ops.cache_hit_ratio")
    assert len(ratios) == 1
    assert ratios[0][1] is None or 0 <= ratios[0][1] <= 1


def test_monitoring_is_not_for_staff_or_customers(db: Session) -> None:
    db.as_role("app_admin", db.claims(1, "app_admin"))
    for query in (
        "select * from ops.top_queries",
        "select * from ops.index_usage",
        "select * from ops.cache_hit_ratio",
        "select * from ops.table_bloat('core.orders')",
    ):
        with db.raises("42501"):
            db.conn.execute(query)
    db.as_role("app_readwrite", db.claims(1))
    with db.raises("42501"):
        db.conn.execute("select * from ops.sales_daily")
