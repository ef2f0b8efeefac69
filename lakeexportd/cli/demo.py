"""``make run``: the sandbox ksqlDB and the daemon on ``etc/demo.yaml``, stopped by Ctrl-C.

Ports come from the config (the sandbox listens where ``ksqldb.url`` points, metrics on
``metrics.listen``); both are checked first, so a taken port is one clear line, not a traceback
from a child. Each child runs in its own session: Ctrl-C reaches only this process, which stops
the daemon first (its running exports finish or abort cleanly) and then the sandbox.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from lakeexportd.config.load import load_config
from lakeexportd.config.model import Config
from lakeexportd.errors import EX_FAILED, LakeExportError, exit_code

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "etc" / "demo.yaml"
SANDBOX_ARGS = ("--seed", "1", "--preload", "5000", "--rate", "5")
READY_TIMEOUT = 120.0  # generating the preload takes a few seconds on a slow machine


def port_problem(host: str, port: int, what: str) -> str | None:
    """None if ``host:port`` can be bound, else a message saying what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        # As the servers do: a port left in TIME_WAIT by the last `make run` is free to reuse;
        # only a live listener makes the bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return (f"port {port} on {host} is not free ({exc.strerror or exc}); it is needed "
                    f"for {what}. Stop whatever listens there (`ss -ltnp 'sport = :{port}'` "
                    "shows it), e.g. an earlier `make run`, then run `make run` again")
    return None


def sandbox_port(config: Config) -> int:
    parts = urlsplit(config.ksqldb.url)
    return parts.port or 8088


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lakeexportd.cli.demo", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, default=DEMO_CONFIG)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except LakeExportError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    port = sandbox_port(config)
    for host, number, what in (("127.0.0.1", port, "the sandbox ksqlDB (ksqldb.url)"),
                               (config.metrics.host, config.metrics.port,
                                "the daemon's metrics (metrics.listen)")):
        problem = port_problem(host, number, what)
        if problem:
            print(f"demo: error: {problem}", file=sys.stderr)
            return EX_FAILED
    return Demo(config, args.config, port).run()


class Demo:
    def __init__(self, config: Config, config_path: Path, port: int) -> None:
        self.config = config
        self.config_path = config_path
        self.port = port
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()  # signal-safe

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.events.put("stop"))
        lakeexportd = [sys.executable, "-m", "lakeexportd"]
        # Each start generates its rows anew on top of the same ./data_lake: ids of their own
        # keep a second `make run` from showing duplicate TRANSACTION_IDs.
        id_prefix = f"txn_{int(time.time()):x}_"
        sandbox = subprocess.Popen(
            [*lakeexportd, "sandbox", "--port", str(self.port), *SANDBOX_ARGS,
             "--id-prefix", id_prefix],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        daemon: subprocess.Popen[bytes] | None = None
        try:
            if not self._wait_ready(sandbox):
                print("demo: error: the sandbox did not start (see its messages above)",
                      file=sys.stderr)
                return EX_FAILED
            daemon = subprocess.Popen(
                [*lakeexportd, "run", "-c", str(self.config_path)], start_new_session=True
            )
            print(f"demo: exporting into {self.config.lake.where}; metrics on "
                  f"http://{self.config.metrics.listen}/metrics; Ctrl-C stops", flush=True)
            while self.events.empty():
                if daemon.poll() is not None or sandbox.poll() is not None:
                    break
                time.sleep(0.2)
            if daemon.poll() is not None:
                return daemon.returncode  # it stopped by itself: its message says why
            if sandbox.poll() is not None:
                print("demo: error: the sandbox exited; stopping the daemon", file=sys.stderr)
                _stop(daemon, "daemon", 60)
                return EX_FAILED
            return _stop(daemon, "daemon", 60)
        finally:
            if daemon is not None:
                _stop(daemon, "daemon", 60)
            _stop(sandbox, "sandbox", 15)
            print("demo: stopped", flush=True)

    def _wait_ready(self, sandbox: subprocess.Popen[str]) -> bool:
        """Echo the sandbox's lines until its ready line; False if it exits or we are stopped."""
        ready = threading.Event()

        def pump() -> None:
            assert sandbox.stdout is not None
            for line in sandbox.stdout:
                print(f"sandbox: {line.rstrip()}", flush=True)
                if "listening on" in line:
                    ready.set()

        threading.Thread(target=pump, name="sandbox-output", daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2):
            if sandbox.poll() is not None or not self.events.empty():
                return False
            if time.monotonic() > deadline:
                return False
        return True


def _stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], name: str,
          timeout: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"demo: {name} did not stop in {timeout:g}s; killing it", file=sys.stderr)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


if __name__ == "__main__":
    raise SystemExit(main())
