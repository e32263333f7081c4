"""The event store as DuckLake tables (docs/scale.md): the catalog in PostgreSQL, the data as
Parquet files under a folder or an s3:// URL, so that runs on several hosts share one store.

DuckDB's extensions come from their Python packages (duckdb-extension-ducklake, -postgres,
-httpfs) and load from disk: nothing is downloaded at run time. DuckDB finds an extension by
its name in `<extension_directory>/v<version>/<platform>/`, and the postgres package's file
is named `postgres` while DuckDB calls it `postgres_scanner`: a folder of links with DuckDB's
names serves all three."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import psycopg2

log = logging.getLogger(__name__)

EXTENSIONS = {  # DuckDB's name: (package, file name in the package)
    "ducklake": ("duckdb_extension_ducklake", "ducklake"),
    "postgres_scanner": ("duckdb_extension_postgres", "postgres"),
    "httpfs": ("duckdb_extension_httpfs", "httpfs"),
}
PASSWORD_ENV = "DIANA_POSTGRES_PASSWORD"
LAKE = "lake"  # the attached catalog's name; every query runs in it (USE)


class LakeError(Exception):
    """The DuckLake store cannot be reached or set up; the message says why."""


@dataclass(frozen=True)
class DuckLakeSettings:
    """Where the store's catalog and data live. `catalog` is a libpq connection string
    without the password (see _password)."""

    catalog: str
    data_path: str

    def catalog_with_password(self) -> str:
        password = _password()
        if password and not names_password(self.catalog):
            return f"{self.catalog} password={password}"
        return self.catalog

    def failure(self, exc: Exception) -> LakeError:
        """The error for a failed connection: its first line, the password blanked out."""
        first = re.sub(r"password=\S+", "password=…", str(exc).splitlines()[0])
        return LakeError(f"cannot open the event store at {self}: {first}")

    def attach_sql(self, read_only: bool) -> str:
        catalog = self.catalog_with_password()
        options = [f"DATA_PATH {_quoted(self.data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        return f"ATTACH {_quoted('ducklake:postgres:' + catalog)} AS {LAKE} ({', '.join(options)})"

    def __str__(self) -> str:
        return f"DuckLake (catalog {self.catalog}, data {self.data_path})"


StoreLocation = Path | DuckLakeSettings  # the DuckDB file, or the DuckLake tables


def _password() -> str | None:
    """$DIANA_POSTGRES_PASSWORD, else the local stack's password file (scale profile), else
    None: libpq's own PGPASSWORD or ~/.pgpass."""
    given = os.environ.get(PASSWORD_ENV)
    if given:
        return given
    stack_file = Path(os.environ.get("DIANA_HOME") or ".diana") / "postgres" / "password"
    try:
        return stack_file.read_text().strip()
    except OSError:
        return None


def names_password(catalog: str) -> bool:
    return re.search(r"\bpassword\s*=", catalog) is not None


def is_url(location: str) -> bool:
    """s3://..., gs://...: a data path that is not a local folder."""
    return re.match(r"^[a-z0-9]+://", location) is not None


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@functools.cache  # once per process: every store open connects through it
def extension_directory() -> Path:
    """A folder laid out as DuckDB expects, linking to the packages' files (made once per
    DuckDB version, in the user's cache), each file's signature checked (_check_signatures)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache / "diana" / "duckdb-extensions"
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]
    folder = root / f"v{duckdb.__version__}" / platform
    folder.mkdir(parents=True, exist_ok=True)
    for name, (package, file_name) in EXTENSIONS.items():
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise LakeError(
                f"the DuckLake store needs the Python package {package.replace('_', '-')}"
                f"=={duckdb.__version__}; install the project again (pip install -e .)"
            ) from None
        source = (
            Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}"
            / f"{file_name}.duckdb_extension"
        )  # fmt: skip
        if not source.exists():
            raise LakeError(f"{source} is missing: {package} does not match DuckDB's version")
        link = folder / f"{name}.duckdb_extension"
        if not link.exists() or link.resolve() != source.resolve():
            _replace(link, lambda path, source=source: path.symlink_to(source))
    _check_signatures(root, folder, list(EXTENSIONS))
    return root


# DuckDB checks an extension's signature at every LOAD by hashing the whole file: 77 MB for
# ducklake and postgres, 0.15-0.25 s of CPU per connection, and every run opens one or two.
# The files are the installed packages' own, as trusted as DuckDB's library itself: each is
# checked once, by a LOAD that verifies it, and again whenever the file is another (a new
# package, a replaced file); connections then load them without hashing them again.
def _check_signatures(root: Path, folder: Path, names: list[str]) -> None:
    """Have DuckDB verify the signature of each extension in `folder` whose file differs from
    the one it verified last (recorded beside its link); raises LakeError for a refused one."""
    stale = [name for name in names if _checked(folder, name) != _identity(folder, name)]
    if not stale:
        return
    connection = duckdb.connect(
        config={"autoinstall_known_extensions": False, "extension_directory": str(root)}
    )
    try:
        for name in stale:
            identity = _identity(folder, name)
            try:
                connection.execute(f"LOAD {name}")
            except duckdb.Error as exc:
                first = str(exc).splitlines()[0]
                raise LakeError(f"DuckDB refused the extension {name} ({first})") from None
            _replace(_record(folder, name), lambda path, text=identity: path.write_text(text))
    finally:
        connection.close()


def _identity(folder: Path, name: str) -> str:
    """The extension's file, as the file system tells one file from another."""
    found = (folder / f"{name}.duckdb_extension").stat()
    return f"{found.st_dev} {found.st_ino} {found.st_size} {found.st_mtime_ns}"


def _record(folder: Path, name: str) -> Path:
    return folder / f"{name}.verified"


def _checked(folder: Path, name: str) -> str | None:
    try:
        return _record(folder, name).read_text()
    except OSError:
        return None


def _replace(path: Path, make: Callable[[Path], object]) -> None:
    """Make `path` anew with `make`, atomically: a concurrent process sees the old or the
    new one."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    make(temporary)
    temporary.replace(path)


# One writer at a time, as with the DuckDB file: DuckLake merges two transactions that only
# appended, so two runs that each saw a user as new would both add them (a click counted as
# orphaned while its exposure, in the other run, started a second state row). The lock is a
# PostgreSQL advisory lock on the catalog's database, held by a session of its own for as
# long as the store is open, and released by the server when that process dies.
WRITER_LOCK_KEY = 0x4449414E41  # "DIANA"
ATTACH_LOCK_KEY = WRITER_LOCK_KEY + 1
ATTACH_WAIT_S = 60.0
LOCK_RETRY_S = 0.05  # a waiting writer gets the store within this of its release (file or lake)


@contextmanager
def writer_lock(settings: DuckLakeSettings, timeout_s: float) -> Iterator[None]:
    """Hold the store's writer lock, waiting up to `timeout_s` for another process's."""
    with _advisory_locks(settings, [(WRITER_LOCK_KEY,)], timeout_s, "another process writes"):
        yield


@contextmanager
def partition_locks(
    settings: DuckLakeSettings, topic: str, partitions: list[int], timeout_s: float
) -> Iterator[None]:
    """Hold the ingestion lock of each of the topic's `partitions`: parallel runs (and a
    window's rebuild) store a partition's offsets one at a time, so that each checks the
    ledger and the stored events after the previous one committed. Taken in partition order
    (no two runs wait on each other), in the two-key space, apart from the writer lock's."""
    topic_key = zlib.crc32(topic.encode()) - 2**31  # PostgreSQL's int4
    keys = [(topic_key, partition) for partition in sorted(set(partitions))]
    with _advisory_locks(settings, keys, timeout_s, f"another run ingests {topic}"):
        yield


@contextmanager
def _advisory_locks(
    settings: DuckLakeSettings, keys: list[tuple[int, ...]], timeout_s: float, holder: str
) -> Iterator[None]:
    """Take the advisory locks in order, in a session of their own, waiting up to `timeout_s`
    in all; the server releases them when the session ends (or its process dies)."""
    try:
        session = psycopg2.connect(settings.catalog_with_password())
    except psycopg2.Error as exc:
        raise settings.failure(exc) from None
    try:
        session.autocommit = True
        deadline = time.monotonic() + timeout_s
        waiting = False
        with session.cursor() as cursor:
            for key in keys:
                arguments = ", ".join(["%s"] * len(key))
                while True:
                    cursor.execute(f"SELECT pg_try_advisory_lock({arguments})", key)
                    if cursor.fetchone()[0]:
                        break
                    if time.monotonic() > deadline:
                        raise LakeError(f"{holder}: waited {timeout_s:.0f} s for {settings}")
                    if not waiting:
                        log.info("waiting up to %.0f s for %s: %s", timeout_s, settings, holder)
                        waiting = True
                    time.sleep(LOCK_RETRY_S)
        yield
    finally:
        session.close()


def connect(
    settings: DuckLakeSettings, read_only: bool, spill_folder: Path
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and in use, spilling into
    `spill_folder`, which must be its own (store._spill_folder says why)."""
    connection = duckdb.connect(
        config={
            "temp_directory": str(spill_folder),
            "autoinstall_known_extensions": False,
            "extension_directory": str(extension_directory()),
            "allow_unsigned_extensions": True,  # verified once per file (_check_signatures)
        }
    )
    try:
        for name in EXTENSIONS:
            # httpfs only reads and writes object storage: 55 ms of CPU per connection saved
            # where the files are local (every run opens one).
            if name != "httpfs" or is_url(settings.data_path):
                connection.execute(f"LOAD {name}")
        if not is_url(settings.data_path):
            Path(settings.data_path).mkdir(parents=True, exist_ok=True)
        # The first ATTACH creates the catalog's tables: two at once would both try.
        with _advisory_locks(settings, [(ATTACH_LOCK_KEY,)], ATTACH_WAIT_S, "another attaches"):
            connection.execute(settings.attach_sql(read_only))
        connection.execute(f"USE {LAKE}")
    except duckdb.Error as exc:
        connection.close()
        raise settings.failure(exc) from None
    return connection


def maintain(connection: duckdb.DuckDBPyConnection, keep: timedelta) -> dict[str, int]:
    """What a lake that takes a commit every few seconds needs (lake_maintenance_job): write
    the rows that small commits left inlined in the catalog to Parquet, merge the small files
    commits wrote, forget snapshots older than `keep`, and delete the files no remaining
    snapshot reads. Returns how many of each."""
    older_than = f"now() - INTERVAL '{int(keep.total_seconds())} seconds'"
    flushed = connection.execute(f"CALL ducklake_flush_inlined_data('{LAKE}')").fetchall()
    merged = connection.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')").fetchall()
    expired = connection.execute(
        f"CALL ducklake_expire_snapshots('{LAKE}', older_than => {older_than})"
    ).fetchall()
    deleted = connection.execute(
        f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => {older_than})"
    ).fetchall()
    return {
        "inlined rows written": int(sum(row[2] for row in flushed)),
        "files merged": sum(row[2] for row in merged),  # (schema, table, processed, created)
        "snapshots expired": len(expired),
        "files deleted": len(deleted),
    }


def is_commit_conflict(exc: BaseException) -> bool:
    """DuckLake refused a commit because another transaction's commit conflicts with it
    (checked: concurrent updates of a table's inlined rows); running it again may succeed."""
    return "Transaction conflict" in str(exc)
