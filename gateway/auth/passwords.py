"""Passwords: argon2id hashes made and checked off the event loop, and the rules a new password meets."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import invalid_input
from gateway.settings import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, Settings

# each hash takes ~64 MiB with the default parameters: this many at a time per process
CONCURRENT_HASHES = 4


def argon2_hasher(settings: Settings | None = None) -> PasswordHasher:
    """The argon2id hasher of the settings' cost (the defaults without settings): the gateway's, and the
    command line's (`commercecore users create`), so that every hash is made the same way."""
    return PasswordHasher(
        time_cost=settings.argon2_time_cost if settings else Settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib if settings else Settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism if settings else Settings.argon2_parallelism,
    )


class Passwords:
    """argon2id hashing off the event loop, a bounded number at a time."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = argon2_hasher(settings)
        self.limiter = anyio.CapacityLimiter(CONCURRENT_HASHES)
        # an unknown email is verified against this, so that it takes as long as a known one
        self.dummy_hash = self.hasher.hash(uuid.uuid4().hex)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hasher.hash, password, limiter=self.limiter)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return (
                    self.hasher.verify(stored_hash or self.dummy_hash, password) and stored_hash is not None
                )
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(check, limiter=self.limiter)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def check_password_rules(password: Any, field: str = "password") -> str:
    """The new password, or 422 naming the rule it breaks (a string of PASSWORD_MIN_LENGTH to
    PASSWORD_MAX_LENGTH characters)."""
    if not isinstance(password, str):
        raise invalid_input(field, "must be a string")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise invalid_input(
            field, f"must have at least {PASSWORD_MIN_LENGTH} characters", min_length=PASSWORD_MIN_LENGTH
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise invalid_input(
            field, f"must have at most {PASSWORD_MAX_LENGTH} characters", max_length=PASSWORD_MAX_LENGTH
        )
    return password
