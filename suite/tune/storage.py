"""Optuna storage from a URL: the embedded journal file by default, any Optuna storage by URL.

``tune.storage=null`` keeps each cell's study in ``<results_dir>/optuna/<cell>.log``, an Optuna
``JournalStorage`` on a file backend: an append-only log whose appends are serialized by a lock
(``suite.tune.journal``: an flock that dies with its holder; a torn tail is cut under it), so
several local processes can share a study with no server. (SQLite is not the default:
Optuna's RDB layer on SQLite serializes writers on one database lock and its docs warn against
parallel use.) One file per cell, so cells tuned in parallel never contend for one lock and each
worker replays only its own cell's log.

Other storages are chosen by the URL scheme (see :data:`SCHEMES`): any SQLAlchemy database Optuna
supports (``postgresql://user:pw@host/db`` lets workers on many machines share a study),
``journal:<path>`` for an explicit journal file, ``redis://`` for Optuna's Redis journal.
Every message names the URL with its password masked.
"""
from __future__ import annotations

import importlib.util
import random
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from suite.tune.journal import open_journal
from suite.types import ConfigError, StoreError

PASSWORD_MASK = "***"


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, safe to print and log."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed netloc (e.g. a bad port): mask everything after the scheme
        return url.split(":", 1)[0] + ":" + PASSWORD_MASK
    if not password:
        return url
    user_host = parts.netloc.rsplit("@", 1)
    user = user_host[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD_MASK}@{user_host[1]}"))


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def default_journal(results_dir: str | Path, name: str) -> str:
    """The embedded store of one study: ``journal:<results_dir>/optuna/<name>.log``."""
    return f"journal:{Path(results_dir) / 'optuna' / f'{name}.log'}"


def _journal_file(url: str):
    path = Path(url.split(":", 1)[1].removeprefix("//"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_journal(path)
    except OSError as e:
        raise StoreError(
            f"cannot open the Optuna journal {path} ({e.strerror}). Pass a writable results_dir=<dir> "
            f"or tune.storage=journal:<writable path>."
        ) from None


def _redis(url: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    return JournalStorage(JournalRedisBackend(url))  # the redis package is imported here


def _postgresql_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 where only it is installed
    (the suite's test extra pins ``psycopg2-binary``). An explicit ``+driver`` is kept."""
    scheme, rest = url.split(":", 1)
    if scheme != "postgresql" or importlib.util.find_spec("psycopg") or not importlib.util.find_spec("psycopg2"):
        return url
    return f"postgresql+psycopg2:{rest}"


def _rdb(url: str, attempts: int = 5):
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            return RDBStorage(_postgresql_driver(url))
        except (IntegrityError, ProgrammingError, OperationalError) as e:
            # Workers starting together on a fresh database race to create Optuna's tables
            # (optuna/optuna#1092: "duplicate key ... pg_type", "already exists"); the losers
            # find the tables made on a retry. Any other error (unreachable, refused) is final.
            racing = isinstance(e, IntegrityError) or "already exists" in str(e)
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())  # connects and creates Optuna's tables: an unreachable server fails here


# URL scheme (the part before any "+driver") -> storage builder.
SCHEMES: dict[str, Callable[[str], object]] = {
    "journal": _journal_file,
    "redis": _redis, "rediss": _redis,
    "sqlite": _rdb, "postgresql": _rdb, "postgres": _rdb, "mysql": _rdb, "mariadb": _rdb,
    "oracle": _rdb, "mssql": _rdb,
}


def check_url(url: str) -> str:
    """``url`` with a scheme the suite can open (``postgres`` spelled ``postgresql``), else one clear
    error; nothing is opened."""
    if not isinstance(url, str) or ":" not in url:
        raise ConfigError(
            f"tune.storage={url!r} is not a storage URL; use null (the journal file under results_dir), "
            f"journal:<path>, sqlite:///<path>, postgresql://user:password@host:port/db or redis://host:port."
        )
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "postgres":  # SQLAlchemy dropped the short alias; accept it as libpq does
        url = "postgresql" + url[len("postgres"):]
    if scheme not in SCHEMES:
        raise ConfigError(
            f"tune.storage={mask_url(url)!r}: unknown storage scheme {scheme!r}; valid schemes: "
            f"{', '.join(SCHEMES)} (e.g. postgresql://user:password@host:5432/db)."
        )
    return url


def open_storage(url: str):
    """An Optuna storage for ``url``; bad schemes, missing drivers and dead servers raise one clear error."""
    url = check_url(url)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        return SCHEMES[scheme](url)
    except ImportError as e:
        missing = e.name or getattr(e.__cause__, "name", None) or "a database driver"
        raise ConfigError(
            f"tune.storage={mask_url(url)!r} needs the Python package {missing!r}, which is not installed "
            f"(for PostgreSQL: pip install psycopg2-binary; for Redis: pip install redis)."
        ) from None
    except (ConfigError, StoreError):
        raise
    except Exception as e:  # SQLAlchemy / driver / Redis errors: unreachable, refused, bad credentials
        reason = (str(getattr(e, "orig", None) or e).strip() or type(e).__name__).splitlines()[0]
        password = _password(url)
        if password:  # drivers rarely echo it, but never print it
            reason = reason.replace(password, PASSWORD_MASK)
        raise StoreError(
            f"cannot open the Optuna storage {mask_url(url)} ({type(e).__name__}: {reason}). Check that the "
            f"server is running and reachable from this machine and that the database, user and password "
            f"are right; or drop tune.storage to use the journal file under results_dir."
        ) from None
