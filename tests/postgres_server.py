"""A real PostgreSQL for the tests: its own server in a temporary folder (the Debian
package's binaries; `make test` installs them). Imported by conftest.py's fixtures
and by tests that need the password they must never show."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PG_PASSWORD = "pw-never-shown-9f3"  # in every URL the tests hand out: no output may show it


def _postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server's binaries (package postgresql; make test installs it)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


class PostgresServer:
    """initdb + pg_ctl on a free loopback port, as an unprivileged user when run as root
    (PostgreSQL refuses root; CI runs as root): the Debian package's `postgres` user."""

    def __init__(self) -> None:
        import pwd
        import socket
        import subprocess
        import tempfile

        bindir = _postgres_bin()
        if bindir is None:
            pytest.fail("PostgreSQL's server is not installed (Debian package postgresql; `make test` installs it)")
        self.bindir = bindir
        self.as_user: list[str] = []
        self.data = Path(tempfile.mkdtemp(prefix="evalq-pg-"))
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            pw = pwd.getpwnam("postgres")
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        run = lambda *cmd: subprocess.run(self.as_user + list(cmd), check=True, capture_output=True, text=True)  # noqa: E731
        run(str(bindir / "initdb"), "-D", str(self.data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(self.data / "db"), "-l", str(self.data / "db" / "server.log"), "-w", "-o",
            f"-p {self.port} -k {self.data / 'db'} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            "start")
        self._run = run
        self._n = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://evalq:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL (with a password: trust auth ignores it)."""
        import psycopg

        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            if self._n == 1:
                conn.execute("CREATE ROLE evalq LOGIN SUPERUSER")
            conn.execute(f'CREATE DATABASE "{name}" OWNER evalq')
        return self.url(name)

    def stop(self) -> None:
        import shutil

        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(self.data, ignore_errors=True)
