"""The classic approach to running Databricks queries from async Python, as a baseline.

An asyncio application wraps the synchronous `databricks-sql-connector` (SEA backend) in
`asyncio.to_thread`, submits every query at once with `asyncio.gather` and drains each result.
Each worker thread keeps one connection (session) in a `threading.local`, the way a careful
application reuses sessions; the default executor is sized with `--workers` (0 keeps asyncio's own
default, `min(32, cpu_count + 4)` threads).

Prints one JSON line on stdout: wall time, rows, errors, peak threads (`threading.active_count()`
and OS threads from /proc/self/task, sampled every 10 ms) and peak RSS (sampled VmRSS, VmHWM).

Usage: classic_asyncio.py --port PORT --token TOKEN [--warehouse ID] [--queries N] [--workers W]
       [--sql SQL] [--timeout SECONDS]
Needs the venv of requirements-test.txt. Talks to 127.0.0.1 over HTTPS without verifying the
(self-signed) certificate: loopback benchmarks only.
"""
import argparse
import asyncio
import concurrent.futures
import json
import os
import resource
import sys
import threading
import time

from databricks import sql


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="emulator HTTPS port on 127.0.0.1")
    p.add_argument("--token", required=True, help="personal access token")
    p.add_argument("--warehouse", default="bench", help="warehouse id (default bench)")
    p.add_argument("--queries", type=int, default=1000, help="concurrent queries (default 1000)")
    p.add_argument(
        "--workers",
        type=int,
        default=50,
        help="to_thread pool size (default 50; 0 keeps asyncio's min(32, cpus + 4))",
    )
    p.add_argument("--sql", default="SELECT 1 AS one", help="statement to run")
    p.add_argument("--timeout", type=float, default=600.0, help="overall limit in seconds")
    return p.parse_args()


def status_bytes(field):
    """A /proc/self/status field in kB, as bytes (0 when unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line[len(field):].split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def os_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


class Sampler:
    """Samples thread counts every 10 ms on its own thread."""

    def __init__(self):
        self.peak_py = threading.active_count()
        self.peak_os = os_threads()
        self.peak_rss = status_bytes("VmRSS:")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak_py = max(self.peak_py, threading.active_count())
            self.peak_os = max(self.peak_os, os_threads())
            self.peak_rss = max(self.peak_rss, status_bytes("VmRSS:"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def main():
    args = parse_args()
    local = threading.local()
    connections = []
    lock = threading.Lock()

    def connection():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = sql.connect(
                server_hostname="127.0.0.1",
                _port=args.port,
                http_path=f"/sql/1.0/warehouses/{args.warehouse}",
                access_token=args.token,
                use_sea=True,
                _tls_no_verify=True,
                # Telemetry first fetches feature flags from port 443 (not `_port`) and
                # retries for ~30 s on loopback: off, so only the query path is measured.
                enable_telemetry=False,
            )
            local.conn = conn
            with lock:
                connections.append(conn)
        return conn

    def run_query():
        """Blocking: one statement on this thread's session, result drained."""
        cursor = connection().cursor()
        try:
            cursor.execute(args.sql)
            return cursor.fetchall_arrow().num_rows
        finally:
            cursor.close()

    async def run_all():
        if args.workers > 0:
            asyncio.get_running_loop().set_default_executor(
                concurrent.futures.ThreadPoolExecutor(max_workers=args.workers)
            )
        tasks = [asyncio.to_thread(run_query) for _ in range(args.queries)]
        return await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), args.timeout
        )

    with Sampler() as sampler:
        started = time.perf_counter()
        results = asyncio.run(run_all())
        wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    rows = sum(r for r in results if isinstance(r, int))
    for conn in connections:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    print(
        json.dumps(
            {
                "queries": args.queries,
                "workers": args.workers or min(32, (os.cpu_count() or 1) + 4),
                "wall_s": wall,
                "rows": rows,
                "errors": len(errors),
                "first_error": repr(errors[0])[:300] if errors else None,
                "peak_python_threads": sampler.peak_py,
                "peak_os_threads": sampler.peak_os,
                "peak_rss_bytes": sampler.peak_rss,
                # VmHWM of this process image (ru_maxrss would include the parent's RSS at
                # fork time, which Linux carries across exec).
                "vm_hwm_bytes": status_bytes("VmHWM:"),
                "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
