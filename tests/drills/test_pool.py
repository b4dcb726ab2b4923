"""Pool exhaustion and slow statements: a gateway with two connections and a one-second pool timeout.

Two staff requests hold both connections: a test-only function (`api.gw_hold`, created in this drill's own
database) waits for an advisory lock that the drill holds, and returns when the drill lets go, so how long
the connections stay busy is up to the drill, not a timer. Requests beyond the pool wait for a connection
up to the pool timeout and are then answered 503 in the error shape with Retry-After: not a hang, not a
500. A statement that runs past its role's statement_timeout (lowered for anonymous visitors in this
database; `api.gw_sleep`) is cut off by PostgreSQL and answered 504, naming the timeout. Right after,
/health is 200 and ordinary requests succeed: the held calls, the timeout and the refused requests left no
connection behind.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg

from tests.drills.conftest import (
    DrillDb,
    drill_settings,
    error_body,
    new_customer,
    new_staff,
    running_gateway,
    unavailable_body,
    wait_for,
)

POOL_MAX = 2
POOL_TIMEOUT = 1.0
HOLD_LOCK = 20261124
ANONYMOUS_TIMEOUT_MS = 300

FIXTURE_SQL = f"""
create function api.gw_hold() returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform pg_catalog.pg_advisory_xact_lock({HOLD_LOCK});  -- until the drill lets go
  return pg_catalog.jsonb_build_object('held', true);
end;
$$;
comment on function api.gw_hold() is 'Waits for the fault drill''s advisory lock (fault drills only).';
create function api.gw_sleep(seconds double precision) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform pg_catalog.pg_sleep(gw_sleep.seconds);
  return pg_catalog.jsonb_build_object('slept', gw_sleep.seconds);
end;
$$;
comment on function api.gw_sleep(double precision) is 'Sleeps (fault drills only).';
revoke all on function api.gw_hold(), api.gw_sleep(double precision) from public;
grant execute on function api.gw_hold() to app_admin;
grant execute on function api.gw_sleep(double precision) to app_readonly, app_readwrite;
-- anonymous visitors get a short statement_timeout in this database only
alter role app_readonly in database {{database}} set statement_timeout = '{ANONYMOUS_TIMEOUT_MS}ms';
"""


def gateway_backends(db: DrillDb) -> list[tuple[str, str, str]]:
    """(state, wait event, query) of the gateway's pooled connections right now."""
    return [
        (str(state), str(wait_event), str(query))
        for state, wait_event, query in db.rows(
            "select state, coalesce(wait_event, ''), query from pg_stat_activity"
            " where datname = %s and application_name = 'commercecore-gateway'",
            [db.name],
        )
    ]


def held(db: DrillDb) -> int:
    """Pooled connections waiting for the drill's lock."""
    return sum(
        1 for state, event, query in gateway_backends(db) if event == "advisory" and "gw_hold" in query
    )


def test_pool_exhaustion_and_statement_timeout(drill_db: DrillDb) -> None:
    drill_db.rows(FIXTURE_SQL.replace("{database}", drill_db.name))
    settings = drill_settings(
        drill_db.gateway_url, pool_min=POOL_MAX, pool_max=POOL_MAX, pool_timeout=POOL_TIMEOUT
    )
    with running_gateway(settings) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        customer = new_customer(http, "pool")
        staff = new_staff(http, drill_db.admin_url)

        with psycopg.connect(drill_db.admin_url, autocommit=True) as lock:
            lock.execute("select pg_advisory_lock(%s)", [HOLD_LOCK])

            # -- two calls hold both connections, for as long as the drill holds the lock ---------------
            results: list[httpx.Response] = []

            def hold() -> None:
                with httpx.Client(base_url=base_url, headers=staff.headers, timeout=30) as own:
                    results.append(own.post("/rpc/gw_hold"))

            holders = [threading.Thread(target=hold) for _ in range(POOL_MAX)]
            for thread in holders:
                thread.start()
            wait_for(lambda: held(drill_db) == POOL_MAX, "both pooled connections to be held", deadline=15)

            # -- requests beyond the pool: a bounded wait, then 503 ---------------------------------------
            answers: list[tuple[float, httpx.Response]] = []
            guard = threading.Lock()

            def extra(path: str, headers: dict[str, str]) -> None:
                with httpx.Client(base_url=base_url, timeout=30) as own:
                    started = time.monotonic()
                    response = own.get(path, headers=headers)
                    with guard:
                        answers.append((time.monotonic() - started, response))

            extras = [
                threading.Thread(target=extra, args=args)
                for args in (
                    ("/products?limit=1", {}),
                    ("/categories", {}),
                    ("/orders", customer.headers),
                    ("/me", customer.headers),
                )
            ]
            for thread in extras:
                thread.start()
            for thread in extras:
                thread.join(timeout=30)
            assert len(answers) == len(extras)
            assert held(drill_db) == POOL_MAX  # still held: nothing was freed meanwhile
            assert len(gateway_backends(drill_db)) <= POOL_MAX  # never more than the pool's maximum
            for elapsed, response in answers:
                body = unavailable_body(response)
                # no connection came free: the pool's wait, or (anonymous) the wait for their share of it
                assert body["details"]["code"] == "unavailable", body
                assert body["details"].get("reason", "anonymous_share") == "anonymous_share", body
                assert "connection" in body["message"], body
                # it waited for a connection, and not much longer than the pool timeout
                assert POOL_TIMEOUT * 0.8 <= elapsed <= POOL_TIMEOUT + 3.0, (elapsed, body)

            lock.execute("select pg_advisory_unlock(%s)", [HOLD_LOCK])
        for thread in holders:
            thread.join(timeout=30)
        assert [r.status_code for r in results] == [200] * POOL_MAX, [r.text for r in results]
        assert all(r.json() == {"held": True} for r in results)

        # -- the gateway is healthy right after -----------------------------------------------------------
        assert http.get("/health").status_code == 200
        assert http.get("/products?limit=1").status_code == 200
        assert http.get("/me", headers=customer.headers).status_code == 200

        # -- a statement past its role's statement_timeout: 504, naming the timeout --------------------
        started = time.monotonic()
        cut = http.post("/rpc/gw_sleep", json={"seconds": 5})
        elapsed = time.monotonic() - started
        body: dict[str, Any] = error_body(cut, 504)
        assert body["code"] == "57014", body
        assert "statement timeout" in body["message"], body
        assert elapsed < 4, elapsed  # PostgreSQL cut it at 300 ms; it did not run its 5 s

        # a signed-in customer's timeout (5 s) is not the anonymous one
        assert http.post("/rpc/gw_sleep", json={"seconds": 0.5}, headers=customer.headers).status_code == 200
        # and the connections the timeouts ran on are fine: every request after them succeeds
        for _ in range(POOL_MAX * 3):
            assert http.get("/products?limit=1").status_code == 200
        assert http.get("/health").json()["status"] == "ok"
        assert len(gateway_backends(drill_db)) <= POOL_MAX
