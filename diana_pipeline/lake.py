"""The event store as DuckLake tables (docs/scale.md): the catalog in PostgreSQL, the data as
Parquet files under a folder or an s3:// URL, so that runs on several hosts share one store.

DuckDB's extensions come from their Python packages (duckdb-extension-ducklake, -postgres,
-httpfs) and load from disk: nothing is downloaded at run time. DuckDB finds an extension by
its name in `<extension_directory>/v<version>/<platform>/`, and the postgres package's file
is named `postgres` while DuckDB calls it `postgres_scanner`: a folder of links with DuckDB's
names serves all three."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

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
    without the password, which comes from $DIANA_POSTGRES_PASSWORD (else libpq's own
    PGPASSWORD or ~/.pgpass)."""

    catalog: str
    data_path: str

    def attach_sql(self, read_only: bool) -> str:
        catalog = self.catalog
        password = os.environ.get(PASSWORD_ENV)
        if password and not re.search(r"\bpassword\s*=", catalog):
            catalog = f"{catalog} password={password}"
        options = [f"DATA_PATH {_quoted(self.data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        return f"ATTACH {_quoted('ducklake:postgres:' + catalog)} AS {LAKE} ({', '.join(options)})"

    def __str__(self) -> str:
        return f"DuckLake (catalog {self.catalog}, data {self.data_path})"


StoreLocation = Path | DuckLakeSettings  # the DuckDB file, or the DuckLake tables


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def extension_directory() -> Path:
    """A folder laid out as DuckDB expects, linking to the packages' files (made once per
    DuckDB version, in the user's cache)."""
    import importlib

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
            temporary = link.with_suffix(f".{os.getpid()}")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(source)
            temporary.replace(link)  # atomic: a concurrent process sees one link or the other
    return root


def connect(settings: DuckLakeSettings, read_only: bool) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and in use."""
    connection = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "extension_directory": str(extension_directory()),
        }
    )
    try:
        for name in EXTENSIONS:
            connection.execute(f"LOAD {name}")
        if not settings.data_path.startswith(("s3://", "gs://", "r2://", "http")):
            Path(settings.data_path).mkdir(parents=True, exist_ok=True)
        connection.execute(settings.attach_sql(read_only))
        connection.execute(f"USE {LAKE}")
    except duckdb.Error as exc:
        connection.close()
        first = re.sub(r"password=\S+", "password=…", str(exc).splitlines()[0])
        raise LakeError(f"cannot open the event store at {settings}: {first}") from None
    return connection
