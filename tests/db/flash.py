"""Helpers of the flash-sale tests: a product's stock as the shop shows it (the product row plus its shards),
the invariants of shards and ledger, and staff turning the mode on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def on_hand(conn: Conn, product_id: int) -> int:
    """The units on hand: products.stock plus the shards (what GET /products/{id} shows), as the superuser."""
    conn.execute("reset role")
    row = conn.execute(
        "select p.stock + coalesce((select sum(s.units) from core.stock_shards as s"
        " where s.product_id = p.id), 0) from core.products as p where p.id = %s",
        [product_id],
    ).fetchone()
    assert row is not None
    return int(row[0])


def set_shards(conn: Conn, staff_id: int, product_id: int, shards: int) -> dict[str, Any]:
    """PATCH /products/{id} {"stock_shards": shards} as staff, committed when the connection autocommits."""
    conn.execute("reset role")
    with conn.transaction():
        conn.execute(
            "select set_config('role', 'app_admin', true),"
            " set_config('request.jwt.claims',"
            " json_build_object('sub', %s::text, 'role', 'app_admin')::text, true)",
            [staff_id],
        )
        row = conn.execute(
            "select api.update_product(%s, stock_shards => %s)", [product_id, shards]
        ).fetchone()
        conn.execute("reset role")
    assert row is not None
    product: dict[str, Any] = row[0]
    return product


def check_flash_invariants(conn: Conn, product_ids: Iterable[int]) -> None:
    """For each product: the product row plus its shards equal its ledger sum; in flash-sale mode the row
    holds nothing and there are exactly stock_shards shards, none negative; out of it, no shards. Every
    order's total equals its lines, and core.held_units equals the lines of pending orders. As the
    superuser."""
    conn.execute("reset role")
    ids = list(product_ids)
    bad = conn.execute(
        """
        select p.id, p.stock, p.stock_shards, s.shards, s.units, s.lowest,
               (select coalesce(sum(m.delta), 0) from core.inventory_movements as m where m.product_id = p.id)
        from core.products as p
        cross join lateral (
          select count(*) as shards, coalesce(sum(x.units), 0) as units, min(x.units) as lowest
          from core.stock_shards as x where x.product_id = p.id
        ) as s
        where p.id = any(%s) and (
          p.stock + s.units
          <> (select coalesce(sum(m.delta), 0) from core.inventory_movements as m where m.product_id = p.id)
          or (p.stock_shards > 1 and (p.stock <> 0 or s.shards <> p.stock_shards or s.lowest < 0))
          or (p.stock_shards = 1 and s.shards <> 0)
        )
        """,
        [ids],
    ).fetchall()
    assert bad == [], (
        "stock, shards and ledger disagree (id, stock, stock_shards, shards, units, lowest, ledger)"
    )
    totals = conn.execute(
        "select o.id from core.orders as o left join core.order_items as i on i.order_id = o.id group by o.id"
        " having o.total_minor <> coalesce(sum(i.quantity::bigint * i.unit_price_minor), 0)"
    ).fetchall()
    assert totals == [], "order totals differ from their lines"
    held = conn.execute(
        """
        select coalesce(h.user_id, l.user_id), coalesce(h.product_id, l.product_id), h.units, l.units
        from (select * from core.held_units where units <> 0) as h
        full join (
          select o.user_id, i.product_id, sum(i.quantity) as units
          from core.orders as o join core.order_items as i on i.order_id = o.id
          where o.status = 'pending' group by 1, 2
        ) as l on l.user_id = h.user_id and l.product_id = h.product_id
        where h.units is distinct from l.units
        """
    ).fetchall()
    assert held == [], "core.held_units differs from the lines of pending orders"
