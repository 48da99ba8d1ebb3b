"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temp dir, on 127.0.0.1 and a
free port, trust auth, fsync off; stopped and deleted afterwards. As root the server runs as the
`postgres` user (PostgreSQL refuses to run as root). Debian's `postgresql` package provides the binaries."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return versions[-1] if versions else None


def why_not() -> str | None:
    """None when a server can be started here, else the reason (for pytest.skip)."""
    if find_bin("initdb") is None or find_bin("pg_ctl") is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql; `make test` does so as root)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install 'daxiao[postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Yields the base URL, postgresql://daxiao@127.0.0.1:PORT (append /DBNAME)."""
    root = tempfile.mkdtemp(prefix="daxiao-pg-")
    data, port = os.path.join(root, "data"), free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root: hand it the folder and run it as `postgres`
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else ["su", "postgres", "-c"]

    def run(*cmd: str) -> None:
        full = [*prefix, " ".join(cmd)] if prefix[:1] == ["su"] else [*prefix, *cmd]
        subprocess.run(full, check=True, capture_output=True, text=True, cwd=root)

    try:
        run(find_bin("initdb"), "-D", data, "-U", "daxiao", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        run(find_bin("pg_ctl"), "-D", data, "-o", opts if prefix[:1] != ["su"] else f"'{opts}'", "-w",
            "-l", os.path.join(root, "log"), "start")
        yield f"postgresql://daxiao@127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            run(find_bin("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
