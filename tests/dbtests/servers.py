"""The shared servers' admin access, and servers of a test's own.

A throwaway PostgreSQL cluster: ``initdb`` + ``pg_ctl`` on a free port.

The shared servers serve every test; a test that stops, restarts, reconfigures
(TLS, password checks) or kills a server starts one of these instead. Each
lives in a fresh directory under the system temp dir, owned by the
``postgres`` OS user when the tests run as root (``initdb`` refuses root).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from db_core import DatabaseSettings, configure, dispose_engine, get_engine
from db_core.testing import free_port, unavailable

POSTGRES_ADMIN_URL = os.environ.get("DB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("DB_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
PG_BINDIR_FALLBACK = "/usr/lib/postgresql/15/bin"


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a loop of its own, also when called from a test that is already on one."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coro).result()


async def admin(backend: str, statements: Sequence[str]) -> list[Any]:
    """Run ``statements`` as the admin user on a shared server's ``test`` database; the last one's rows."""
    url = make_url(POSTGRES_ADMIN_URL if backend == "postgres" else MYSQL_ADMIN_URL)
    if backend == "postgres":
        return await postgres_statements(
            statements,
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=5,
        )
    return await mysql_statements(
        statements,
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        db=url.database,
    )


def database_exists(backend: str, name: str) -> bool:
    """Whether database ``name`` exists on the shared ``backend`` server (``postgres`` or ``mysql``)."""
    statement = {
        "postgres": f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        "mysql": f"SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}'",
    }[backend]
    return bool(run_coroutine(admin(backend, [statement])))


async def postgres_statements(statements: Iterable[str], **connect: Any) -> list[Any]:
    """Run ``statements`` on a new asyncpg connection (``connect``: its arguments); the last one's rows."""
    import asyncpg

    conn = await asyncpg.connect(**connect)
    rows: list[Any] = []
    try:
        for statement in statements:
            rows = list(await conn.fetch(statement))
    finally:
        await conn.close()
    return rows


async def mysql_statements(statements: Iterable[str], **connect: Any) -> list[Any]:
    """Run ``statements`` on a new aiomysql connection in autocommit mode; the last one's rows."""
    import aiomysql

    conn = await aiomysql.connect(connect_timeout=5, autocommit=True, **connect)
    rows: list[Any] = []
    try:
        async with conn.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
                rows = list(await cursor.fetchall())
    finally:
        conn.close()
    return rows


def pg_bindir() -> Path | None:
    """The PostgreSQL server binaries (``pg_config --bindir``), if installed."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    fallback = Path(PG_BINDIR_FALLBACK)
    return fallback if (fallback / "initdb").exists() else None


def _os_user(name: str) -> tuple[list[str], tuple[int, int] | None]:
    """The command prefix and uid/gid to run a server as ``name`` when we are root."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        unavailable(f"running as root and there is no {name} OS user to run the server as")
        raise  # unreachable: unavailable() raises
    return ["runuser", "-u", name, "--"], (entry.pw_uid, entry.pw_gid)


class PostgresCluster:
    """A PostgreSQL server of this test's own on ``127.0.0.1:<free port>``.

    ``auth`` is the authentication method for every connection (``trust`` or
    ``scram-sha-256``; the ``postgres`` superuser's password is
    :attr:`admin_password`), ``conf`` extra ``postgresql.conf`` settings,
    ``files`` files copied into the data directory (certificates) before start.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        auth: str = "trust",
        conf: Mapping[str, str] | None = None,
        files: Mapping[str, Path] | None = None,
        standby_of: PostgresCluster | None = None,
    ) -> None:
        bindir = pg_bindir()
        if bindir is None:
            unavailable("no PostgreSQL server binaries (pg_config --bindir) to start a server of the test's own")
        assert bindir is not None
        self.bindir = bindir
        self._as_user, owner = _os_user("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="db_test_pg_"))
        self.data = self.root / "data"
        self.admin_password = standby_of.admin_password if standby_of else uuid.uuid4().hex
        self.conf = {"listen_addresses": "'127.0.0.1'", "fsync": "off", "shared_buffers": "16MB", **(conf or {})}
        self.port = free_port()
        self.running = False
        (self.root / "pwfile").write_text(self.admin_password + "\n")
        if owner:
            for path in (self.root, self.root / "pwfile"):
                os.chown(path, *owner)
        if standby_of is not None:
            # A streaming standby: a base backup of the running primary, with -R's standby.signal
            # and primary_conninfo. The primary's initdb allowed replication connections from here.
            backup = [str(bindir / "pg_basebackup"), "-h", self.host, "-p", str(standby_of.port), "-U", "postgres"]
            backup += ["-D", str(self.data), "-R", "-X", "stream", "--no-sync"]
            self._run(backup, "pg_basebackup")
            return
        initdb = [str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", f"--auth={auth}"]
        initdb += [f"--pwfile={self.root / 'pwfile'}", "-E", "UTF8", "--no-sync"]
        self._run(initdb, "initdb")
        for name, source in (files or {}).items():
            target = self.data / name
            shutil.copy(source, target)
            target.chmod(0o600)
            if owner:
                os.chown(target, *owner)

    def _run(self, command: list[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._as_user, *command], cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise AssertionError(f"{what} failed:\n{result.stdout}\n{result.stderr}\n{log[-3000:]}")
        return result

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) on the same port; waits until it accepts connections."""
        options = f"-p {self.port} -k {self.root} " + " ".join(f"-c {k}={v}" for k, v in self.conf.items())
        start = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60"]
        self._run([*start, "-o", options, "start"], "pg_ctl start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (a crash; recovery on the next start)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], "stop")
        self.running = False

    def remove(self) -> None:
        """Stop the server if it runs and delete its files."""
        if self.running:
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                "stop",
                check=False,
            )
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    async def admin(self, *statements: str, database: str = "postgres") -> list[Any]:
        """Run ``statements`` as the superuser; returns the last one's rows."""
        return await postgres_statements(
            statements,
            host=self.host,
            port=self.port,
            user="postgres",
            password=self.admin_password,
            database=database,
            timeout=10,
            ssl=False,
        )

    def settings(self, **overrides: Any) -> DatabaseSettings:
        """Settings that log in as the superuser to database ``postgres`` (override ``name`` etc.)."""
        values: dict[str, Any] = {
            "type": "postgres",
            "host": self.host,
            "port": self.port,
            "user": "postgres",
            "password": self.admin_password,
            "name": "postgres",
            "connect_timeout_seconds": 5,
            "_env_file": None,
        }
        values.update(overrides)
        return DatabaseSettings(**values)


@contextmanager
def postgres_cluster(**kwargs: Any) -> Iterator[PostgresCluster]:
    """A started :class:`PostgresCluster`, removed afterwards."""
    cluster = PostgresCluster(**kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


class MariaDBServer:
    """A MariaDB of the test's own on ``127.0.0.1:<free port>``.

    The administrator is :attr:`admin_user` with :attr:`admin_password`
    (created by an ``--init-file`` at start); :meth:`admin` runs statements as
    that user over plain TCP. ``files`` named ``ca.pem``, ``server.crt`` and
    ``server.key`` turn TLS on; ``options`` are more ``mariadbd`` options
    (replication, Galera).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        files: Mapping[str, Path] | None = None,
        options: Sequence[str] = (),
        admin_password: str | None = None,
    ) -> None:
        mariadbd = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
        install_db = shutil.which("mariadb-install-db")
        if not mariadbd or not install_db:
            unavailable("no mariadbd / mariadb-install-db to start a MariaDB of the test's own")
            raise AssertionError("unreachable: unavailable() raises")
        self.mariadbd = mariadbd
        self._as_user, owner = _os_user("mysql")
        self.root = Path(tempfile.mkdtemp(prefix="db_test_mariadb_"))
        self.data = self.root / "data"
        self.port = free_port()
        self.admin_user = "db_test_admin"
        self.admin_password = admin_password or uuid.uuid4().hex
        self.options = list(options)
        self.process: subprocess.Popen[bytes] | None = None
        (self.root / "init.sql").write_text(
            f"CREATE USER IF NOT EXISTS '{self.admin_user}'@'%' IDENTIFIED BY '{self.admin_password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.admin_user}'@'%' WITH GRANT OPTION;\n"
        )
        # Copies next to the datadir: the test's own temp dirs are private to the user running pytest.
        self.tls = {name: Path(shutil.copy(source, self.root / name)) for name, source in (files or {}).items()}
        (self.root / "init.sql").chmod(0o600)
        if "server.key" in self.tls:
            self.tls["server.key"].chmod(0o600)
        if owner:
            for path in self.root.iterdir():
                os.chown(path, *owner)
            os.chown(self.root, *owner)
        user = ["--user=mysql"] if owner else []
        result = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={self.data}",
                *user,
                "--skip-test-db",
            ],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise AssertionError(f"mariadb-install-db failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        """Start ``mariadbd`` and wait until the administrator can log in."""
        log = self.root / "error.log"
        command = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.data}",
            f"--socket={self.root / 'mysqld.sock'}",
            f"--pid-file={self.root / 'mysqld.pid'}",
            f"--log-error={log}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--init-file={self.root / 'init.sql'}",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            "--performance-schema=OFF",
        ]
        if self.tls:
            command += [f"--ssl-ca={self.tls['ca.pem']}", f"--ssl-cert={self.tls['server.crt']}"]
            command.append(f"--ssl-key={self.tls['server.key']}")
        command += self.options
        if self._as_user:
            command.append("--user=mysql")
        self.process = subprocess.Popen(command, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                run_coroutine(self.admin("SELECT 1"))
                return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        text = log.read_text(errors="replace") if log.exists() else ""
        self.remove()
        raise AssertionError(f"mariadbd did not start ({last!r}):\n{text[-3000:]}")

    def remove(self) -> None:
        """Stop the server if it runs and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

    async def admin(self, *statements: str) -> list[Any]:
        """Run ``statements`` as the administrator (plain TCP); returns the last one's rows."""
        return await mysql_statements(
            statements, host=self.host, port=self.port, user=self.admin_user, password=self.admin_password
        )

    def settings(self, **overrides: Any) -> DatabaseSettings:
        """Settings that log in as the administrator (override ``user``, ``password``, ``host``...)."""
        values: dict[str, Any] = {
            "type": "mysql",
            "host": self.host,
            "port": self.port,
            "user": self.admin_user,
            "password": self.admin_password,
            "name": "mysql",
            "connect_timeout_seconds": 5,
            "_env_file": None,
        }
        values.update(overrides)
        return DatabaseSettings(**values)


@contextmanager
def mariadb(**kwargs: Any) -> Iterator[MariaDBServer]:
    """A started :class:`MariaDBServer`, removed afterwards."""
    server = MariaDBServer(**kwargs)
    try:
        server.start()
        yield server
    finally:
        server.remove()


class PgBouncer:
    """PgBouncer (Debian's, 1.18) on ``127.0.0.1:<free port>`` in front of ``server``, trusting every user."""

    host = "127.0.0.1"

    def __init__(self, server: PostgresCluster, *, pool_mode: str = "transaction", pool_size: int = 1) -> None:
        binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
        if binary is None:
            unavailable("pgbouncer is not installed (apt-get install pgbouncer)")
        assert binary is not None
        self.binary = binary
        self.server = server
        self._as_user, owner = _os_user("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="db_test_pgbouncer_"))
        self.port = free_port()
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server.host} port={server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.root / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
            f"logfile = {self.root / 'log'}\npidfile = {self.root / 'pid'}\n"
        )
        if owner:
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, *owner)
        self.running = False

    def start(self) -> None:
        """Start in the background; returns once it accepts connections."""
        result = subprocess.run(
            [*self._as_user, self.binary, "-d", str(self.root / "pgbouncer.ini")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"pgbouncer failed to start:\n{result.stdout}\n{result.stderr}\n{self.log()}")
        self.running = True
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"pgbouncer does not accept connections:\n{self.log()}")

    def log(self) -> str:
        """What PgBouncer has logged so far."""
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        """Stop it and delete its files."""
        pidfile = self.root / "pid"
        if self.running and pidfile.exists():
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


BACKENDS = ("sqlite", "postgres", "mysql")


@dataclass(frozen=True)
class Server:
    """A reachable server and a database created for this test run."""

    backend: str
    host: str
    port: int
    user: str
    password: str
    database: str

    def settings(self, **overrides: Any) -> DatabaseSettings:
        values: dict[str, Any] = {
            "type": self.backend,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "name": self.database,
            "_env_file": None,
        }
        values.update(overrides)
        return DatabaseSettings(**values)

    async def admin(self, *statements: str) -> list[Any]:
        """Run statements as the admin user on the shared database; returns the last result's rows."""
        return await admin(self.backend, statements)


async def kill(server: Server, connection_id: int) -> None:
    """Kill the one session the test opened itself, and wait until it is gone."""
    if server.backend == "postgres":
        # The second argument waits (up to 5 s) for the backend to exit.
        assert (await server.admin(f"SELECT pg_terminate_backend({connection_id}, 5000)"))[0][0] is True
        return
    await server.admin(f"KILL {connection_id}")
    for _ in range(100):
        if not await server.admin(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {connection_id}"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"connection {connection_id} survived KILL")


def shared_server(backend: str, admin_url: str) -> Iterator[Server]:
    """A database of this run's own on the shared server of ``backend``, dropped afterwards."""
    name = f"db_test_{uuid.uuid4().hex[:12]}"
    try:
        run_coroutine(admin(backend, [f"CREATE DATABASE {name}"]))
    except Exception as exc:
        masked = make_url(admin_url).render_as_string(hide_password=True)
        unavailable(
            f"{backend} not reachable at {masked}: {type(exc).__name__}: {exc}; "
            f"start it or set DB_TEST_{backend.upper()}_URL"
        )
    url = make_url(admin_url)
    default_port = 5432 if backend == "postgres" else 3306
    yield Server(
        backend, url.host or "127.0.0.1", url.port or default_port, url.username or "", url.password or "", name
    )
    drop = f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if backend == "postgres" else "")
    run_coroutine(admin(backend, [drop]))


def backend_settings(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, **overrides: Any
) -> DatabaseSettings:
    """Settings for ``backend``: a fresh SQLite file, or this run's database on the server."""
    if backend == "sqlite":
        return DatabaseSettings(type="sqlite", name=str(tmp_path / "test.db"), _env_file=None, **overrides)
    server: Server = request.getfixturevalue(f"{backend}_server")
    return server.settings(**overrides)


@asynccontextmanager
async def fresh_tables(settings: DatabaseSettings, metadata: MetaData) -> AsyncIterator[None]:
    """``settings`` configured with ``metadata``'s tables created afresh; dropped, and the engine disposed, after."""
    configure(settings)
    try:
        async with get_engine().begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
        yield
        async with get_engine().begin() as conn:
            await conn.run_sync(metadata.drop_all)
    finally:
        await dispose_engine()
        configure(None)
