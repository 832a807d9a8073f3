"""DATABASE_URL in the form libpq and asyncpg read, TLS parameters included (standard library only: the launcher
and the backup command import it without the virtualenv).

A service's DATABASE_URL is `postgresql+asyncpg://user:password@host:port/db?sslmode=verify-full&sslrootcert=ca.pem`;
libpq's parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslpassword`, `sslcrl` …) are read by asyncpg
itself, for the services' engines, the migrations and the outbox relay's own connections alike (shared/db.py),
and by pg_dump for backups. `ssl=` (SQLAlchemy's spelling for asyncpg) means `sslmode=`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def libpq_url(url: str) -> str:
    """`url` as asyncpg.connect and libpq take it: scheme `postgresql://`, `ssl=` spelt `sslmode=`."""
    parts = urlsplit(re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url))
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "ssl" for name, _ in query):
        if any(name == "sslmode" for name, _ in query):
            raise ValueError("DATABASE_URL has both ssl= and sslmode=: keep sslmode=")
        query = [("sslmode" if name == "ssl" else name, value) for name, value in query]
        parts = parts._replace(query=urlencode(query, safe="/:"))
    return urlunsplit(parts)


def with_database(url: str, database: str) -> str:
    """`url` naming another database on the same server, its parameters (TLS …) kept."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")
