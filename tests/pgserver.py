"""A real PostgreSQL 15 server for the catalogue tests, started and stopped by the tests.

The server runs from the system's binaries (``initdb``, ``pg_ctl``, ``postgres`` on PATH or in
``/usr/lib/postgresql/*/bin``; Debian's ``postgresql-15``). One cluster per test session (per
xdist worker): a fresh data directory, listening on 127.0.0.1 only on a free port, its unix
socket inside the data directory's parent, ``fsync=off`` (a test server: a crash of the machine
may lose it, nothing else). Readiness is polled with a deadline, never a fixed sleep; the server
is stopped by the PID in ``postmaster.pid`` (``pg_ctl stop -m fast``, SIGKILL after a grace).
The server log's tail is in every failure message.

PostgreSQL refuses to run as root: under euid 0 ``initdb`` and ``pg_ctl`` run as the
``postgres`` user (``runuser -u postgres --``) and the cluster lives in a temporary directory
under /tmp chowned to it (pytest's own tmp dirs are root-only, 0700). As any other user they run
directly.

Authentication is real: ``scram-sha-256`` over TCP and the socket, a superuser (``postgres``)
that creates the databases, and a role ``lakeexportd`` that owns them, the role the catalog
connects as. Administration goes through psycopg2 over TCP, as a client would.

Outages for the catalog tests: ``pause()``/``resume()`` (SIGSTOP/SIGCONT of the postmaster and
every backend: connections are accepted by the kernel and then nothing answers, a "slow" or hung
server) and ``down()`` (stop, then start again on the same data directory and port: connections
are refused).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from objectstores import ServerStartError, free_port, tail

INSTALL = "apt-get install postgresql-15"
START_DEADLINE = 60.0  # seconds until the first connection succeeds (cold start on 2 busy cores)
STOP_GRACE = 10.0  # seconds pg_ctl gets for a fast shutdown before SIGKILL
OS_USER = "postgres"  # who runs the server when the tests run as root
SUPERUSER = "postgres"
ROLE = "lakeexportd"
DATABASE = "catalog"


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` of one installation.

    All three must come from the same version: ``initdb`` looks for ``postgres`` next to itself.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    # Debian keeps them out of PATH (only pg_ctl and psql wrappers are linked); newest first.
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise ServerStartError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) are neither on PATH nor in "
        f"/usr/lib/postgresql/*/bin. Install them: `{INSTALL}` (Debian/Ubuntu)."
    )


@dataclass(frozen=True)
class PostgresDatabase:
    """One database on the test server, owned by the ``lakeexportd`` role."""

    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL of this database (psycopg2 driver), as the catalog's ``uri``."""
        return self.server.url_for(self.name)


@dataclass
class PostgresServer:
    """A PostgreSQL cluster the tests own: started by ``start_postgres``, stopped by PID."""

    bin_dir: Path
    root: Path  # the temporary directory holding everything: data, socket, log
    port: int
    superuser_password: str
    password: str  # the lakeexportd role's
    host: str = "127.0.0.1"
    user: str = ROLE
    database: str = DATABASE
    _paused: bool = field(default=False, init=False)

    # --- where things are ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``catalog`` database as the ``lakeexportd`` role."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)

    def pid(self) -> int | None:
        """The postmaster's PID from ``postmaster.pid``, or None when it is not running."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        pid = int(first)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    # --- running the binaries ---------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = START_DEADLINE) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the ``postgres`` OS user when we are root."""
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OS_USER, "--", *command]
        return subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            check=False,
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, deadline: float = START_DEADLINE) -> None:
        """Start the postmaster on ``port`` and wait until the superuser can connect.

        ``pg_ctl start -w`` polls the postmaster until it accepts connections, with a deadline,
        and fails at once if it exits (the port taken, a bad setting); a superuser connection then
        proves the TCP listener and the password.
        """
        # Our own settings come last on the command line, so they win over postgresql.conf.
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -k {self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            done = self._run("pg_ctl", "start", "-w", "-t", str(int(deadline)),
                             "-D", str(self.data_dir), "-l", str(self.log), "-o", options,
                             timeout=deadline + 10)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ServerStartError(
                f"pg_ctl start did not return within {deadline + 10:.0f}s; "
                f"log {self.log}:\n{self.log_tail()}"
            ) from None
        if done.returncode != 0:
            self.stop()
            raise ServerStartError(
                f"PostgreSQL did not start on port {self.port} (pg_ctl exit {done.returncode}: "
                f"{done.stdout.strip()} {done.stderr.strip()}); log {self.log}:\n{self.log_tail()}"
            )
        try:
            self.admin_connect().close()
        except psycopg2.OperationalError as exc:
            self.stop()
            raise ServerStartError(
                f"PostgreSQL started on port {self.port} but refused the superuser: {exc}; "
                f"log {self.log}:\n{self.log_tail()}"
            ) from None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """``pg_ctl stop -m fast`` (waits for it), SIGKILL of the postmaster by PID after ``grace``."""
        pid = self.pid()
        if pid is None:
            return
        if self._paused:
            self.resume()  # a stopped process keeps its pending SIGINT until it continues
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", str(int(grace)),
                      "-D", str(self.data_dir), timeout=grace + 5)
        if self.pid() == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + STOP_GRACE
            while self._alive(pid) and time.monotonic() < end:
                time.sleep(0.05)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def remove(self) -> None:
        """Stop the server and delete its directory (the end of the session)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- outages ------------------------------------------------------------------------------

    def _children(self, postmaster: int) -> list[int]:
        """The postmaster's children: backends, checkpointer, walwriter, ... (from /proc).

        Not ``killpg``: every child calls ``setsid`` and leads a process group of its own.
        """
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                text = Path(stat).read_text()
            except OSError:
                continue  # exited meanwhile
            # Field 4 is the parent PID; the command name (field 2) may hold spaces: skip past ')'.
            if int(text.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.split("/")[2]))
        return children

    def _postmaster(self) -> int:
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"PostgreSQL is not running; log {self.log}:\n{self.log_tail()}")
        return pid

    def pause(self) -> None:
        """SIGSTOP the server's processes: the kernel still accepts TCP, nothing answers.

        The postmaster first, so it forks no backend between the listing and the stops.
        """
        postmaster = self._postmaster()
        os.kill(postmaster, signal.SIGSTOP)
        self._paused = True
        children = self._children(postmaster)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        # A signal is delivered when the process next runs: on a busy machine a backend can
        # still show R for a moment. Paused means every process is stopped, so wait for it.
        deadline = time.monotonic() + START_DEADLINE
        for pid in (postmaster, *children):
            while _state(pid) not in ("T", "t", "Z", "X", None):  # Z: exited, unreaped
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL process {pid} did not stop on SIGSTOP")
                time.sleep(0.01)

    def resume(self) -> None:
        """SIGCONT what ``pause`` stopped: the children, then the postmaster."""
        postmaster = self._postmaster()
        for pid in self._children(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        os.kill(postmaster, signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server hangs inside the block (``pause``), answers again after it."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server is stopped inside the block (connections refused), started again after it
        on the same data directory and port, every database as it was."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    # --- administration -----------------------------------------------------------------------

    def admin_connect(self, database: str = "postgres") -> psycopg2.extensions.connection:
        """A superuser connection over TCP, autocommit (CREATE DATABASE needs it)."""
        connection = psycopg2.connect(
            host=self.host, port=self.port, user=SUPERUSER, password=self.superuser_password,
            dbname=database, connect_timeout=5,
        )
        connection.autocommit = True
        return connection

    def execute(self, sql: str, database: str = "postgres") -> None:
        connection = self.admin_connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def create_database(self, name: str | None = None) -> PostgresDatabase:
        """A fresh empty database (a unique name by default) owned by the ``lakeexportd`` role."""
        name = name or f"catalog_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return PostgresDatabase(self, name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing connections a test's engine pool may still hold."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _make_root() -> Path:
    """A temporary directory the server's OS user owns (under /tmp: a socket path is short)."""
    root = Path(tempfile.mkdtemp(prefix="lakeexportd-pg-"))
    (root / "socket").mkdir()
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(OS_USER)
        except KeyError:
            shutil.rmtree(root)
            raise ServerStartError(
                f"running as root, PostgreSQL needs the OS user {OS_USER!r} to run as, and there "
                f"is none. Install PostgreSQL's package (`{INSTALL}`), which creates it."
            ) from None
        for path in (root, root / "socket"):
            os.chown(path, account.pw_uid, account.pw_gid)
    return root


def start_postgres() -> PostgresServer:
    """initdb a fresh cluster, start it on a free port, create the role and its database."""
    bin_dir = find_bin_dir()
    root = _make_root()
    server = PostgresServer(
        bin_dir, root, port=0, superuser_password=secrets.token_hex(16),
        password=secrets.token_hex(16),
    )
    try:
        _initdb(server)
        for attempt in range(1, 4):
            # Another process may take the port between free_port and the bind: try a new one.
            server.port = free_port()
            try:
                server.start()
                break
            except ServerStartError:
                if "could not bind" not in server.log_tail() or attempt == 3:
                    raise
        server.execute(f"CREATE ROLE \"{ROLE}\" LOGIN PASSWORD '{server.password}'")
        server.execute(f'CREATE DATABASE "{DATABASE}" OWNER "{ROLE}"')
    except BaseException:
        server.remove()
        raise
    return server


def _initdb(server: PostgresServer) -> None:
    pwfile = server.root / "superuser.pw"
    pwfile.write_text(server.superuser_password + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam(OS_USER)
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    done = server._run(
        "initdb", "-D", str(server.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8",
        "--locale=C", "--no-sync",
    )
    pwfile.unlink()
    if done.returncode != 0:
        raise ServerStartError(
            f"initdb ({server.bin_dir}) failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


def _state(pid: int) -> str | None:
    """The one-letter state in /proc/<pid>/stat (T: stopped by a signal); None once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
