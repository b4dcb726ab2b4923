"""Replica routing without a server: commit positions from clients, the settings, the choice of a replica
and the bounded wait for one to reach a position (tests/gateway/test_replicas.py has the real replica)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from gateway import db
from gateway.auth.csrf import Cookies
from gateway.errors import ApiError
from gateway.plan import Plan
from gateway.replicas import (
    LSN_HEADER,
    Replica,
    Replicas,
    client_lsn,
    label_of,
    parse_lsn,
    replica_fault,
    stamp_commit,
)
from gateway.settings import ReplicaSettings, Settings, SettingsError

URL = {"DATABASE_URL": "postgresql://authenticator@db/commercecore", "COMMERCECORE_DEMO": "1"}


def test_commit_positions() -> None:
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn("FFFFFFFF/FFFFFFFF") == 2**64 - 1
    for bad in ("", "0", "0/", "/1", "1/2/3", "G/0", "0/123456789", " 0/1", "0/1\n", "-1/0"):
        with pytest.raises(ValueError, match="not a WAL position"):
            parse_lsn(bad)


def test_a_request_carries_its_position_in_the_header_or_the_cookie() -> None:
    plain, secure = Cookies(secure=False), Cookies(secure=True)
    assert client_lsn({}, plain) is None
    assert client_lsn({"x-commercecore-lsn": "0/10"}, plain) == 16
    assert client_lsn({"cookie": "cc_session=abc; cc_lsn=0/20"}, plain) == 32
    assert client_lsn({"cookie": "__Host-cc_lsn=0/30"}, secure) == 48
    assert client_lsn({"cookie": "cc_lsn=0/30"}, secure) is None  # not the Secure one's name
    # the header wins over the cookie
    assert client_lsn({"x-commercecore-lsn": "0/1", "cookie": "cc_lsn=0/2"}, plain) == 1
    with pytest.raises(ApiError) as header:
        client_lsn({"x-commercecore-lsn": "0/" + "F" * 5000}, plain)
    assert header.value.status == 400
    assert header.value.details == {"code": "invalid_lsn", "field": LSN_HEADER, "max_length": 17}
    assert "set-cookie" not in {name.lower() for name in header.value.headers}
    with pytest.raises(ApiError) as cookie:
        client_lsn({"cookie": "__Host-cc_lsn=nope"}, secure)
    assert cookie.value.status == 400
    cleared = cookie.value.headers["Set-Cookie"]
    assert cleared.startswith("__Host-cc_lsn=;")
    assert {"Max-Age=0", "Secure", "HttpOnly", "Path=/"} <= {part.strip() for part in cleared.split(";")}


def test_a_write_answers_its_position() -> None:
    response = Response(b"{}")
    stamp_commit(response, "0/16B3748", cookie=Cookies(secure=True), max_lag=5.0)
    assert response.headers[LSN_HEADER] == "0/16B3748"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-cc_lsn=0/16B3748;")
    assert {"Max-Age=10", "HttpOnly", "Secure", "SameSite=Lax", "Path=/"} <= {
        part.strip() for part in cookie.split(";")
    }
    bearer = Response(b"{}")
    stamp_commit(bearer, "0/1", cookie=None, max_lag=0.2)
    assert bearer.headers[LSN_HEADER] == "0/1"
    assert "set-cookie" not in bearer.headers


def test_replica_settings_from_the_environment() -> None:
    assert Settings.from_env(URL).replicas == ReplicaSettings(pool_max=10)
    env = {
        **URL,
        "DATABASE_REPLICA_URLS": "postgresql://a:pw@r1:5432/cc , postgres://a:pw@r2,r3:5433/cc",
        "COMMERCECORE_REPLICA_WAIT": "250ms",
        "COMMERCECORE_REPLICA_MAX_LAG": "2",
        "COMMERCECORE_REPLICA_CHECK_INTERVAL": "0.5s",
        "COMMERCECORE_POOL_MAX": "6",
    }
    replicas = Settings.from_env(env).replicas
    # a comma inside a multi-host URL stays in it
    assert replicas.urls == ("postgresql://a:pw@r1:5432/cc", "postgres://a:pw@r2,r3:5433/cc")
    assert (replicas.wait, replicas.max_lag, replicas.check_interval) == (0.25, 2.0, 0.5)
    assert replicas.pool_max == 6  # the primary pool's size unless set
    assert Settings.from_env({**env, "COMMERCECORE_REPLICA_POOL_MAX": "2"}).replicas.pool_max == 2
    assert Settings.from_env({**env, "COMMERCECORE_REPLICA_WAIT": "0"}).replicas.wait == 0
    refused = {
        "DATABASE_REPLICA_URLS": "host=r1 password=secret",
        "COMMERCECORE_REPLICA_WAIT": "-1",
        "COMMERCECORE_REPLICA_MAX_LAG": "0",
        "COMMERCECORE_REPLICA_CHECK_INTERVAL": "soon",
        "COMMERCECORE_REPLICA_POOL_MAX": "0",
    }
    for name, value in refused.items():
        with pytest.raises(SettingsError, match=name) as error:
            Settings.from_env({**env, name: value})
        assert "secret" not in str(error.value)


def test_replicas_are_named_without_credentials() -> None:
    assert (
        label_of("postgresql://authenticator:pw@10.0.0.7:5433/commercecore") == "10.0.0.7:5433/commercecore"
    )
    assert label_of("postgresql://authenticator:pw@replica/commercecore") == "replica:5432/commercecore"


def _statement_error(sqlstate: str) -> db.StatementError:
    error = psycopg.errors.lookup(sqlstate)("replica error")
    return db.StatementError(error, None)


def test_what_a_replica_cannot_answer_goes_to_the_primary() -> None:
    for sqlstate in ("40001", "40P01", "25006", "57P01", "57P03", "08006", "42P01", "42883", "53300"):
        assert replica_fault(_statement_error(sqlstate)), sqlstate
    # the request's own errors, and a statement timeout (the primary would time out the same)
    for sqlstate in ("22P02", "23505", "57014", "P0001", "22012"):
        assert not replica_fault(_statement_error(sqlstate)), sqlstate


def _replicas(**config: Any) -> tuple[Replicas, Replica]:
    settings = Settings(
        database_url="postgresql://x@y/z", replicas=ReplicaSettings(urls=("postgresql://a@r/db",), **config)
    )
    replicas = Replicas(settings, CollectorRegistry())
    replica = replicas.replicas[0]
    replica.pool = object()  # type: ignore[assignment]  # chosen, never used here
    replica.reachable = replica.healthy = True
    replica.replay_lsn = 100
    return replicas, replica


def test_who_may_read_from_a_replica() -> None:
    read = Plan("read", True, False, replica_safe=True)
    write = Plan("call", False, False)
    anonymous = db.ANONYMOUS
    customer = db.Identity("app_readwrite", {"sub": "1"}, jti="j", user_id=1)
    staff = db.Identity("app_admin", {"sub": "2"}, jti="k", user_id=2)
    assert Replicas.primary_reason(anonymous, read) is None
    assert Replicas.primary_reason(customer, read) is None
    assert Replicas.primary_reason(staff, read) == "staff"
    assert Replicas.primary_reason(customer, write) == "write"
    assert Replicas.primary_reason(None, read) == "staff"  # the gateway's own calls


@pytest.mark.anyio
async def test_the_choice_of_a_replica() -> None:
    replicas, replica = _replicas(wait=0.05)
    assert await replicas.choose(None) == (replica, "read")
    assert await replicas.choose(100) == (replica, "caught_up")
    replica.paused = True
    started = time.monotonic()
    assert await replicas.choose(101) == (None, "behind")  # a paused replica is not waited for
    assert time.monotonic() - started < 0.05
    replica.healthy = False
    assert await replicas.choose(None) == (None, "lagging")
    replica.reachable = False
    assert await replicas.choose(None) == (None, "down")


@pytest.mark.anyio
async def test_a_read_waits_for_the_monitor_to_see_its_position_within_the_bound() -> None:
    replicas, replica = _replicas(wait=5.0)

    async def monitor_sees_replay() -> None:
        await replicas._hurry.wait()  # the waiting read asked for a check at once
        replica.replay_lsn = 200
        async with replicas._changed:
            replicas._changed.notify_all()

    monitor = asyncio.create_task(monitor_sees_replay())
    started = time.monotonic()
    assert await replicas.choose(150) == (replica, "caught_up")
    assert time.monotonic() - started < 5.0  # woken by the check, not by the deadline
    await monitor

    short, _ = _replicas(wait=0.05)
    started = time.monotonic()
    assert await short.choose(150) == (None, "behind")
    assert 0.05 <= time.monotonic() - started < 2.0
