"""``lakeexportd sandbox``: run the ksqlDB-compatible sandbox server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
from typing import TYPE_CHECKING

from lakeexportd.sandbox.faults import KINDS, Fault, FaultSpecError

# The exit statuses every lakeexportd command uses, spelled out here because the sandbox
# imports nothing else of lakeexportd: 2 for a bad command line (argparse's own), 78 for a
# setting that cannot work (sysexits EX_CONFIG).
EX_OK = 0
EX_USAGE = 2
EX_CONFIG = 78

# The server (Hypercorn, the catalog) loads only when the sandbox runs: every other command
# builds this parser too, and an export should not pay for a web server's import.
if TYPE_CHECKING:
    from lakeexportd.sandbox.app import SandboxApp
    from lakeexportd.sandbox.server import Settings, TLSFiles

DESCRIPTION = (
    "Run a ksqlDB-compatible server (0.29 wire format) with demo transaction streams and "
    "aggregate tables, on 127.0.0.1. Prints one line when ready; stops on SIGINT/SIGTERM."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8088, help="TCP port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"],
                        help="listen address (loopback only)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="live rows per second added to TRANSACTION_STREAM (0 = off)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same rows)")
    parser.add_argument("--id-prefix", default="txn_", metavar="TEXT",
                        help="prefix of TRANSACTION_ID values (default txn_); give each start "
                        "its own so ids never repeat across restarts on one lake")
    parser.add_argument("--preload", type=int, default=0, metavar="N",
                        help="historical rows generated before start")
    parser.add_argument("--preload-days", type=float, default=7.0, metavar="DAYS",
                        help="spread preloaded rows over the last DAYS days (default 7)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per source")
    parser.add_argument("--max-disorder-ms", type=int, default=5_000, metavar="MS",
                        help="bound on how far a row's ROWTIME may go back within a partition")
    parser.add_argument("--max-push-queries", type=int, default=100, metavar="N",
                        help="running push queries and stream pulls allowed at once, as "
                        "ksql.max.push.queries (default 100); one more gets 400/40003")
    parser.add_argument("--user", help="require HTTP Basic auth with this user name")
    parser.add_argument("--password-env", metavar="VAR",
                        help="environment variable holding the Basic auth password")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    parser.add_argument("--tls-client-ca", metavar="PEM",
                        help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument(
        "--fault", action="append", default=[], metavar="KIND[:key=value,...]",
        help=f"inject a fault on every matching request for the whole run; KIND is one of "
        f"{', '.join(KINDS)}; keys: path, count, seconds, status, rows, bytes, chunk_bytes "
        "(e.g. status:status=503,path=/query-stream)",
    )


def run(args: argparse.Namespace) -> int:
    from lakeexportd.sandbox.server import bind, build

    try:
        settings = _settings(args)
    except (FaultSpecError, ValueError) as exc:
        print(f"lakeexportd sandbox: error: {exc}", file=sys.stderr)
        return EX_USAGE if isinstance(exc, FaultSpecError) else EX_CONFIG
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(f"lakeexportd sandbox: error: cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc} (is another server using the port? pick another with "
              "--port)", file=sys.stderr)
        return EX_CONFIG
    host, port = sock.getsockname()[:2]
    app = build(settings)
    scheme = "https" if settings.tls else "http"
    asyncio.run(_serve(app, sock, f"sandbox listening on {scheme}://{host}:{port}", settings.tls))
    return EX_OK


async def _serve(
    app: SandboxApp, sock: socket.socket, ready_line: str, tls: TLSFiles | None
) -> None:
    from lakeexportd.sandbox.server import serve

    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, shutdown.set)

    async def announce() -> None:
        while not app.started.is_set():
            await asyncio.sleep(0.01)
        print(ready_line, flush=True)

    announcer = asyncio.create_task(announce())
    await serve(app, sock, shutdown, tls)
    announcer.cancel()


def _settings(args: argparse.Namespace) -> Settings:
    from lakeexportd.sandbox.server import Settings, TLSFiles

    credentials = None
    if args.user:
        if not args.password_env:
            raise ValueError("--user needs --password-env VAR naming the password's variable")
        password = os.environ.get(args.password_env)
        if password is None:
            raise ValueError(f"environment variable {args.password_env} (--password-env) is "
                             "not set")
        credentials = (args.user, password)
    tls = None
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("HTTPS needs both --tls-cert and --tls-key")
        tls = TLSFiles(args.tls_cert, args.tls_key, args.tls_client_ca)
    if not re.fullmatch(r"[A-Za-z0-9_-]{0,32}", args.id_prefix):
        raise ValueError("--id-prefix takes up to 32 letters, digits, _ or -")
    if args.rate < 0 or args.preload < 0 or args.partitions < 1 or args.max_push_queries < 0:
        raise ValueError("--rate, --preload and --max-push-queries must be >= 0 and "
                         "--partitions >= 1")
    return Settings(
        host=args.host, port=args.port, seed=args.seed, id_prefix=args.id_prefix,
        rate=args.rate, preload=args.preload,
        preload_days=args.preload_days, partitions=args.partitions,
        max_disorder_ms=args.max_disorder_ms, credentials=credentials,
        faults=[Fault.parse(spec) for spec in args.fault], tls=tls,
        max_push_queries=args.max_push_queries,
    )
