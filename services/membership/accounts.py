"""Organiser accounts: invitation, a password (argon2id) and a TOTP second factor for everyone, recovery codes,
sign-in that issues the shared session token (`shared/auth.py`), and API keys for integrations.

An organiser's TOTP secret is kept sealed with a key derived from SECRET_KEY, so a copy of the database
alone does not give away second factors. Each TOTP time step is accepted once (no replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.domain import failures_so_far, sign_in_wait_s
from services.membership.ratelimit import SIGNIN_PER_ACCOUNT, SIGNIN_PER_IP, RateLimiter
from shared import auth, tokens
from shared.contact import MAX_NAME, collapse_spaces, is_email, normalise_email
from shared.crypto import KeyStore, encode_key
from shared.db import Database
from shared.errors import InvalidInput
from shared.events.catalog import OrganiserInvited, OrganiserSignInLocked, RoleGranted, SubjectKeyIssued
from shared.events.envelope import EventData
from shared.outbox import Outbox
from shared.uow import UnitsOfWork

SET_PASSWORD = "organiser-set-password"
SET_PASSWORD_MAX_AGE_S = 7 * 24 * 3600
MIN_PASSWORD = 12
MAX_PASSWORD = 200
RECOVERY_CODES = 10
TOTP_STEP_S = 30
API_KEY_USE_RECORDED_EVERY = timedelta(minutes=1)  # an API key's last use, as the API keys page shows it


class AccountProblem(InvalidInput):
    """A form about an organiser account that cannot be accepted; `errors` maps fields to what to fix."""


class SignInRefused(Exception):
    """Wrong email, password or code (deliberately not saying which), or a disabled account."""


class TooManyAttempts(Exception):
    """Too many sign-in attempts from this address or for this account: wait `retry_after_s`, then try again."""

    def __init__(self, retry_after_s: int = 300) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = max(1, retry_after_s)


class InvalidLink(Exception):
    """A set-password link that is forged, expired or already used."""


@dataclass(frozen=True)
class NewOrganiser:
    """What an operator (or an invitation email) needs to finish creating an account."""

    organiser_id: str
    totp_secret: str
    otpauth_uri: str
    set_password_url: str


@dataclass(frozen=True)
class Enrolment:
    """What the set-password page shows: who, and the second factor to add to an authenticator app."""

    organiser_id: str
    email: str
    totp_secret: str
    otpauth_uri: str


def utcnow() -> datetime:
    return datetime.now(UTC)


class OrganiserAccounts:
    def __init__(
        self, db: Database, outbox: Outbox, *, secret_key: str, public_base_url: str, network_name: str
    ) -> None:
        self.uows = UnitsOfWork(db, outbox)
        self.secret_key = secret_key
        self.public_base_url = public_base_url.rstrip("/")
        self.network_name = network_name
        self.hasher = PasswordHasher()
        self.keys = KeyStore(tables.subject_keys, "membership")
        self.limiter = RateLimiter(secret_key)
        self._totp_key = hashlib.sha256(f"totp-secrets:{secret_key}".encode()).digest()
        self._code_key = hashlib.sha256(f"recovery-codes:{secret_key}".encode()).digest()

    # second factor material ----------------------------------------------------------------------
    def _seal_totp(self, secret: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(self._totp_key).encrypt(nonce, secret.encode(), b"totp")).decode()

    def _open_totp(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return AESGCM(self._totp_key).decrypt(raw[:12], raw[12:], b"totp").decode()

    def _code_hash(self, code: str) -> str:
        canonical = code.replace("-", "").replace(" ", "").lower()
        return hmac.new(self._code_key, canonical.encode(), hashlib.sha256).hexdigest()

    def otpauth_uri(self, secret: str, email: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=self.network_name)

    def _matching_step(self, secret: str, code: str, now: datetime | None = None) -> int | None:
        """The time step whose code this is (allowing one step of clock drift), or None."""
        code = code.replace(" ", "")
        if not code.isdigit() or len(code) != 6:
            return None
        totp = pyotp.TOTP(secret)
        moment = now or utcnow()
        for drift in (0, -1, 1):
            at = moment + timedelta(seconds=drift * TOTP_STEP_S)
            if hmac.compare_digest(totp.at(at), code):
                return int(at.timestamp()) // TOTP_STEP_S
        return None

    # creating accounts ---------------------------------------------------------------------------
    async def scope_exists(self, session: AsyncSession, scope_type: str, scope_id: str | None) -> bool:
        if scope_type == "network":
            return scope_id is None
        return await self.scope_name(session, scope_type, scope_id) is not None

    async def scope_name(self, session: AsyncSession, scope_type: str, scope_id: str | None) -> str | None:
        """The name of the region, group or sub-team (scope_type, scope_id); None when there is none."""
        table = {"region": tables.regions, "group": tables.local_groups, "subteam": tables.subteams}.get(scope_type)
        if table is None or not scope_id:
            return None
        return (await session.execute(select(table.c.name).where(table.c.id == scope_id))).scalar()

    async def within(
        self, session: AsyncSession, by: auth.OrganiserScope, scope_type: str, scope_id: str | None
    ) -> bool:
        """Whether `by` looks after the whole of (scope_type, scope_id): they may hand it to someone else."""
        if by.is_network:
            return True
        if (by.scope_type, by.scope_id) == (scope_type, scope_id):
            return True
        if by.scope_type == "region" and scope_type == "group" and scope_id:
            g = tables.local_groups
            region = (await session.execute(select(g.c.region_id).where(g.c.id == scope_id))).scalar()
            return region is not None and region == by.scope_id
        return False

    async def create(
        self,
        *,
        email: str,
        name: str = "",
        scope_type: str,
        scope_id: str | None = None,
        invited_by: auth.OrganiserScope | None = None,
    ) -> NewOrganiser:
        """A new organiser account, waiting for its password and second factor (set through a one-time link).

        From the command line (`invited_by` None) the operator is told the link; an organiser's invitation
        is announced as OrganiserInvited, which notifications turns into an email.
        """
        email_n = normalise_email(email)
        name = collapse_spaces(name)
        scope_id = scope_id or None
        errors: dict[str, str] = {}
        if not is_email(email_n):
            errors["email"] = "Enter an email address in the correct format, like name@example.org"
        if len(name) > MAX_NAME:
            errors["name"] = f"Name must be {MAX_NAME} characters or fewer"
        if scope_type not in auth.SCOPE_TYPES:
            errors["scope_type"] = "Choose the whole network, a region, a group or a sub-team"
        async with self.uows.begin() as uow:
            session = uow.session
            if "scope_type" not in errors and not await self.scope_exists(session, scope_type, scope_id):
                errors["scope_id"] = "Choose a region, group or sub-team that exists"
            if (
                not errors
                and invited_by is not None
                and not await self.within(session, invited_by, scope_type, scope_id)
            ):
                errors["scope_id"] = "You can only invite organisers for the part of the network you look after"
            o = tables.organisers
            if not errors:
                exists = await session.execute(select(o.c.id).where(o.c.email_normalised == email_n))
                if exists.first() is not None:
                    errors["email"] = "There is already an organiser with this email address"
            if errors:
                raise AccountProblem(errors)
            organiser_id = str(uuid.uuid4())
            secret = pyotp.random_base32()
            nonce = secrets.token_urlsafe(24)
            await session.execute(
                pg_insert(o).values(
                    id=organiser_id,
                    email_normalised=email_n,
                    name=name,
                    scope_type=scope_type,
                    scope_id=scope_id,
                    status="invited",
                    totp_secret=self._seal_totp(secret),
                    set_password_nonce=nonce,
                    invited_by=invited_by.organiser_id if invited_by else None,
                )
            )
            await session.execute(
                pg_insert(tables.role_grants).values(
                    id=str(uuid.uuid4()),
                    role="organiser",
                    organiser_id=organiser_id,
                    scope_type=scope_type,
                    scope_id=scope_id,
                    granted_by=invited_by.organiser_id if invited_by else None,
                )
            )
            token = tokens.sign(self.secret_key, SET_PASSWORD, {"o": organiser_id, "n": nonce})
            url = f"{self.public_base_url}/organisers/set-password?token={quote(token)}"
            key, _ = await self.keys.get_or_create(session, organiser_id)
            events: list[EventData] = [
                SubjectKeyIssued(key_id=organiser_id, key=encode_key(key)),
                RoleGranted(
                    organiser_id=organiser_id,
                    role="organiser",
                    scope_type=scope_type,  # type: ignore[arg-type]
                    scope_id=scope_id,
                    email=await self.keys.seal(session, organiser_id, email_n),
                    name=await self.keys.seal(session, organiser_id, name) if name else None,
                ),
            ]
            if invited_by is not None:
                events.append(
                    OrganiserInvited(
                        organiser_id=organiser_id,
                        email=await self.keys.seal(session, organiser_id, email_n),
                        name=await self.keys.seal(session, organiser_id, name) if name else None,
                        scope_type=scope_type,  # type: ignore[arg-type]
                        scope_id=scope_id,
                        invited_by=invited_by.organiser_id,
                        set_password_url=await self.keys.seal(session, organiser_id, url),
                        expires_at=utcnow() + timedelta(seconds=SET_PASSWORD_MAX_AGE_S),
                    )
                )
            await uow.emit_all(events)
        return NewOrganiser(organiser_id, secret, self.otpauth_uri(secret, email_n), url)

    # the one-time link -----------------------------------------------------------------------------
    async def _by_link(self, session: AsyncSession, token: str) -> Any:
        try:
            payload = tokens.verify(self.secret_key, SET_PASSWORD, token, SET_PASSWORD_MAX_AGE_S)
            organiser_id, nonce = str(payload["o"]), str(payload["n"])
        except (tokens.InvalidToken, KeyError, TypeError):
            raise InvalidLink() from None
        o = tables.organisers
        row = (await session.execute(select(o).where(o.c.id == organiser_id).with_for_update())).first()
        if row is None or row.set_password_nonce is None or not hmac.compare_digest(row.set_password_nonce, nonce):
            raise InvalidLink()
        return row

    async def enrolment(self, token: str) -> Enrolment:
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._by_link(session, token)
        secret = self._open_totp(row.totp_secret)
        return Enrolment(row.id, row.email_normalised, secret, self.otpauth_uri(secret, row.email_normalised))

    async def set_password(self, token: str, password: str, confirm: str, code: str) -> list[str]:
        """Set the password (the link then stops working) once a code proves the authenticator is set up;
        return fresh recovery codes, shown once."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._by_link(session, token)
            errors: dict[str, str] = {}
            if len(password) < MIN_PASSWORD:
                errors["password"] = f"Choose a password of at least {MIN_PASSWORD} characters"
            elif len(password) > MAX_PASSWORD:
                errors["password"] = f"Choose a password of at most {MAX_PASSWORD} characters"
            elif password.strip().lower() == row.email_normalised:
                errors["password"] = "Choose a password that is not your email address"
            elif password != confirm:
                errors["confirm"] = "The two passwords are not the same"
            step = self._matching_step(self._open_totp(row.totp_secret), code)
            if step is None:
                errors["code"] = "Enter the 6-digit code your authenticator app shows now"
            if errors:
                raise AccountProblem(errors)
            codes = ["-".join(secrets.token_hex(5)[i : i + 5] for i in (0, 5)) for _ in range(RECOVERY_CODES)]
            o = tables.organisers
            now = utcnow()
            await session.execute(
                update(o)
                .where(o.c.id == row.id)
                .values(
                    password_hash=self.hasher.hash(password),
                    status="active" if row.status == "invited" else row.status,
                    set_password_nonce=None,
                    totp_last_step=step,
                    activated_at=row.activated_at or now,
                )
            )
            rc = tables.recovery_codes
            await session.execute(rc.delete().where(rc.c.organiser_id == row.id))
            await session.execute(
                pg_insert(rc).values([{"organiser_id": row.id, "code_hash": self._code_hash(c)} for c in codes])
            )
            return codes

    # signing in ------------------------------------------------------------------------------------
    async def sign_in(self, email: str, password: str, code: str, *, ip: str) -> tuple[auth.OrganiserScope, str]:
        """Check password and second factor (a TOTP code or an unused recovery code); return the scope and
        a session token. Raises SignInRefused without saying what was wrong, or TooManyAttempts: per address,
        per account, and an account's own back-off (each wrong try past the first few doubles its wait)."""
        email_n = normalise_email(email)
        async with self.uows.begin() as uow:
            session = uow.session
            by_ip = await self.limiter.hit(session, SIGNIN_PER_IP, ip, ip=ip)
            by_account = await self.limiter.hit(session, SIGNIN_PER_ACCOUNT, email_n, ip=ip)
            locked = await self._locked_for_s(session, email_n)
        if locked:
            raise TooManyAttempts(locked)
        if not (by_ip.allowed and by_account.allowed):
            raise TooManyAttempts(max(by_ip.retry_after_s, by_account.retry_after_s))
        try:
            scope = await self._check_credentials(email_n, password, code)
        except SignInRefused:
            await self._count_failure(email_n)
            raise
        async with self.uows.begin() as uow:
            await uow.session.execute(
                tables.signin_backoff.delete().where(tables.signin_backoff.c.bucket == self._backoff_bucket(email_n))
            )
        return scope, auth.issue(self.secret_key, scope)

    async def _check_credentials(self, email_n: str, password: str, code: str) -> auth.OrganiserScope:
        o = tables.organisers
        async with self.uows.begin() as uow:
            session = uow.session
            row = (await session.execute(select(o).where(o.c.email_normalised == email_n).with_for_update())).first()
            if row is None or row.password_hash is None or row.status != "active":
                self.hasher.hash(password or "x")  # the same time spent as for a real account
                raise SignInRefused()
            try:
                self.hasher.verify(row.password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                raise SignInRefused() from None
            values: dict[str, Any] = {"last_signed_in_at": utcnow()}
            if self.hasher.check_needs_rehash(row.password_hash):
                values["password_hash"] = self.hasher.hash(password)
            step = self._matching_step(self._open_totp(row.totp_secret), code)
            if step is not None and step > row.totp_last_step:
                values["totp_last_step"] = step
            elif not await self._use_recovery_code(session, row.id, code):
                raise SignInRefused()
            if await self._role_revoked(session, row):
                raise SignInRefused()
            await session.execute(update(o).where(o.c.id == row.id).values(**values))
            scope_name = await self.scope_name(session, row.scope_type, row.scope_id)
        return auth.OrganiserScope(row.id, row.scope_type, row.scope_id, name=row.name or None, scope_name=scope_name)

    @staticmethod
    async def _role_revoked(session: AsyncSession, row: Any) -> bool:
        """An account whose organiser role (for its scope) was revoked, and not given again, cannot sign in."""
        g = tables.role_grants
        same = (g.c.organiser_id == row.id, g.c.role == "organiser", g.c.scope_type == row.scope_type,
                g.c.scope_id.is_not_distinct_from(row.scope_id))
        grants = (await session.execute(select(g.c.revoked_at).where(*same))).scalars().all()
        return bool(grants) and all(revoked is not None for revoked in grants)

    def _backoff_bucket(self, email_n: str) -> str:
        return hmac.new(self._code_key, f"signin-backoff:{email_n}".encode(), hashlib.sha256).hexdigest()[:64]

    async def _locked_for_s(self, session: AsyncSession, email_n: str) -> int:
        """Seconds this account still waits before its next sign-in is even checked (0: none)."""
        b = tables.signin_backoff
        until = (
            await session.execute(select(b.c.locked_until).where(b.c.bucket == self._backoff_bucket(email_n)))
        ).scalar()
        left = (until - utcnow()).total_seconds() if until is not None else 0
        return int(left) + 1 if left > 0 else 0

    async def _count_failure(self, email_n: str) -> None:
        """One more wrong try in a row: past the first few, the account waits (30 s, doubling each time, at most
        an hour); a new wait is announced (OrganiserSignInLocked) so the organiser is emailed, once per wait."""
        b, o = tables.signin_backoff, tables.organisers
        bucket = self._backoff_bucket(email_n)
        now = utcnow()
        async with self.uows.begin() as uow:
            session = uow.session
            await session.execute(pg_insert(b).values(bucket=bucket).on_conflict_do_nothing(index_elements=["bucket"]))
            row = (await session.execute(select(b).where(b.c.bucket == bucket).with_for_update())).one()
            failures = failures_so_far(row.failures, row.last_failure_at, now) + 1
            wait = sign_in_wait_s(failures)
            locked_until = now + timedelta(seconds=wait) if wait else None
            await session.execute(
                update(b).where(b.c.bucket == bucket).values(
                    failures=failures, last_failure_at=now, locked_until=locked_until
                )
            )
            if locked_until is None:
                return
            account = (
                await session.execute(
                    select(o.c.id, o.c.name).where(o.c.email_normalised == email_n, o.c.status == "active")
                )
            ).first()
            if account is None:
                return  # the same wait for an address that is no account, and nobody to tell
            key, new_key = await self.keys.get_or_create(session, account.id)
            if new_key:  # an account made before keys were: notifications needs it to read the address
                await uow.emit(SubjectKeyIssued(key_id=account.id, key=encode_key(key)))
            await uow.emit(
                OrganiserSignInLocked(
                    organiser_id=account.id,
                    email=await self.keys.seal(session, account.id, email_n),
                    name=await self.keys.seal(session, account.id, account.name) if account.name else None,
                    failures=failures,
                    locked_until=locked_until,
                )
            )

    async def _use_recovery_code(self, session: AsyncSession, organiser_id: str, code: str) -> bool:
        if len(code.replace("-", "").replace(" ", "")) != 10:
            return False
        rc = tables.recovery_codes
        used = await session.execute(
            update(rc)
            .where(rc.c.organiser_id == organiser_id, rc.c.code_hash == self._code_hash(code), rc.c.used_at.is_(None))
            .values(used_at=utcnow())
            .returning(rc.c.code_hash)
        )
        return used.first() is not None

    async def list_organisers(self, by: auth.OrganiserScope) -> list[Any]:
        o = tables.organisers
        async with self.uows.begin() as uow:
            session = uow.session
            rows = (await session.execute(select(o).order_by(o.c.created_at))).all()
            return [r for r in rows if await self.within(session, by, r.scope_type, r.scope_id)]

    # API keys --------------------------------------------------------------------------------------
    async def create_api_key(
        self, name: str, scope_type: str, scope_id: str | None, by: auth.OrganiserScope | None
    ) -> tuple[str, str]:
        """A new key for an integration, limited to a scope within the creator's; returns (id, key).
        The key is shown once: only its id is kept, so it is revoked by id."""
        name = collapse_spaces(name)
        errors: dict[str, str] = {}
        if not name or len(name) > 120:
            errors["name"] = "Name the integration (up to 120 characters), so you know which key to revoke"
        async with self.uows.begin() as uow:
            session = uow.session
            if scope_type not in auth.SCOPE_TYPES or not await self.scope_exists(session, scope_type, scope_id or None):
                errors["scope_id"] = "Choose a region, group or sub-team that exists"
            elif by is not None and not await self.within(session, by, scope_type, scope_id or None):
                errors["scope_id"] = "You can only create keys for the part of the network you look after"
            if errors:
                raise AccountProblem(errors)
            key_id = str(uuid.uuid4())
            await session.execute(
                pg_insert(tables.api_keys).values(
                    id=key_id,
                    name=name,
                    scope_type=scope_type,
                    scope_id=scope_id or None,
                    created_by=by.organiser_id if by else None,
                )
            )
        scope = auth.OrganiserScope(by.organiser_id if by else "operator", scope_type, scope_id or None, key_id=key_id)
        return key_id, auth.issue(self.secret_key, scope, auth.OSDI_API)

    async def api_keys(self, by: auth.OrganiserScope) -> list[Any]:
        k = tables.api_keys
        async with self.uows.begin() as uow:
            session = uow.session
            rows = (await session.execute(select(k).order_by(k.c.created_at.desc()))).all()
            return [r for r in rows if await self.within(session, by, r.scope_type, r.scope_id)]

    async def api_key_revoked(self, key_id: str) -> bool:
        """True for a key that was revoked, or that this network never issued. A key in use has its last use
        recorded to the minute (`API_KEY_USE_RECORDED_EVERY`): a sync calling many times a minute makes one write a
        minute, not a committed write (and a wait for the disk) on every call."""
        k = tables.api_keys
        async with self.uows.begin() as uow:
            session = uow.session
            now = utcnow()
            row = (
                await session.execute(
                    select(k.c.id, k.c.last_used_at).where(k.c.id == key_id, k.c.revoked_at.is_(None))
                )
            ).first()
            if row is not None and (row.last_used_at is None or row.last_used_at <= now - API_KEY_USE_RECORDED_EVERY):
                await session.execute(
                    update(k).where(k.c.id == key_id, k.c.revoked_at.is_(None)).values(last_used_at=now)
                )
        return row is None
