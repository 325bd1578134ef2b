"""A throwaway PostgreSQL cluster for the kit's tests and benchmarks (Debian's ``postgresql`` package).

``PostgresCluster.start()`` runs ``initdb`` in a temp dir and ``pg_ctl start`` on a free loopback
port; ``stop()`` stops it and removes the dir. ``initdb`` refuses to run as root, so as root the
cluster belongs to the ``postgres`` user (``runuser -u postgres``). ``unavailable()`` says why no
cluster can be started here (no PostgreSQL binaries, no ``postgres`` user, no psycopg), or ``None``.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def unavailable() -> str | None:
    """Why a throwaway cluster cannot be started on this machine, or ``None`` when it can."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg/psycopg_pool are not installed (pip install -e '.[test]')"
    if bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if _as_root():
        import pwd
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user for initdb"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One throwaway cluster on 127.0.0.1; ``settings`` are extra ``postgres -c`` options."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = {"fsync": "off", "max_connections": "300", **(settings or {})}
        self.dir: str | None = None
        self.port = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if _as_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PostgresCluster:
        why = unavailable()
        if why:
            raise RuntimeError(why)
        bindir = bin_dir()
        assert bindir is not None
        self.dir = tempfile.mkdtemp(prefix="batchspec-pg-")
        os.chmod(self.dir, 0o700)
        if _as_root():
            shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        done = self._run(str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                         "--no-sync", "--locale=C")
        if done.returncode:
            self.stop()
            raise RuntimeError(f"initdb failed: {done.stderr[-1000:]}")
        self.port = _free_port()
        opts = " ".join(f"-c {k}={v}" for k, v in {"listen_addresses": "127.0.0.1", "port": str(self.port),
                                                     "unix_socket_directories": self.dir,
                                                     **self.settings}.items())
        done = self._run(str(bindir / "pg_ctl"), "-D", data, "-l", os.path.join(self.dir, "log"), "-w",
                         "-t", "60", "-o", opts, "start")
        if done.returncode:
            log = Path(self.dir, "log").read_text(errors="replace")[-1500:] if Path(self.dir, "log").exists() else ""
            self.stop()
            raise RuntimeError(f"pg_ctl start failed: {done.stderr[-500:]} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.dir is None:
            return
        bindir = bin_dir()
        data = os.path.join(self.dir, "data")
        if bindir is not None and os.path.exists(os.path.join(data, "postmaster.pid")):
            self._run(str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
