"""The classic approach to running Databricks queries from async Python, as a baseline.

An asyncio application wraps a synchronous official client in `asyncio.to_thread`, submits every
query at once with `asyncio.gather` and drains each result as an Arrow table:

- `--client connector`: `databricks-sql-connector` (SEA backend, `use_sea=True`); each worker
  thread keeps one connection (session) in a `threading.local`, the way a careful application
  reuses sessions; results are read with `cursor.fetchall_arrow()` (EXTERNAL_LINKS, LZ4).
- `--client sdk`: `databricks-sdk` statement execution (`WorkspaceClient.statement_execution`),
  one shared client; `EXTERNAL_LINKS` + `ARROW_STREAM`, polling while PENDING/RUNNING, every chunk
  link downloaded in turn with `requests` and decoded with `pyarrow.ipc`, the documented recipe.

The default executor is sized with `--workers` (0 keeps asyncio's own default,
`min(32, cpu_count + 4)` threads).

Prints one JSON line on stdout: wall time, start/first batch/end timestamps (Unix seconds),
rows, errors, peak threads (`threading.active_count()` and OS threads from /proc/self/task,
sampled every 10 ms) and peak RSS (sampled VmRSS, VmHWM).

Usage: classic_asyncio.py --client {connector,sdk} --url URL --token TOKEN [--warehouse ID]
       [--queries N] [--workers W] [--sql SQL] [--timeout SECONDS]
Needs the venv of requirements-test.txt. The connector talks HTTPS to 127.0.0.1 without verifying
the (self-signed) certificate: loopback benchmarks only.
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
import urllib.parse

import pyarrow
import pyarrow.ipc


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", choices=["connector", "sdk"], default="connector")
    p.add_argument("--url", required=True, help="emulator URL (https:// for the connector)")
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


def connector_runner(args, connections, lock):
    """A blocking `run_query()` over databricks-sql-connector, one session per thread."""
    from databricks import sql

    url = urllib.parse.urlsplit(args.url)
    local = threading.local()

    def connection():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = sql.connect(
                server_hostname=url.hostname,
                _port=url.port,
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

    def run_query(first_batch):
        cursor = connection().cursor()
        try:
            cursor.execute(args.sql)
            table = cursor.fetchall_arrow()
            first_batch(time.time())
            return table.num_rows
        finally:
            cursor.close()

    return run_query


def sdk_runner(args):
    """A blocking `run_query()` over databricks-sdk statement execution."""
    import requests
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.sql import Disposition, Format, StatementState

    client = WorkspaceClient(host=args.url, token=args.token, auth_type="pat")
    api = client.statement_execution
    downloads = threading.local()
    pending = (StatementState.PENDING, StatementState.RUNNING)

    def session():
        s = getattr(downloads, "session", None)
        if s is None:
            s = downloads.session = requests.Session()
        return s

    def run_query(first_batch):
        response = api.execute_statement(
            statement=args.sql,
            warehouse_id=args.warehouse,
            disposition=Disposition.EXTERNAL_LINKS,
            format=Format.ARROW_STREAM,
            wait_timeout="10s",
        )
        delay = 0.05
        while response.status.state in pending:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            response = api.get_statement(response.statement_id)
        if response.status.state != StatementState.SUCCEEDED:
            raise RuntimeError(f"statement ended {response.status.state}: {response.status.error}")
        tables = []
        result = response.result
        while result is not None:
            links = result.external_links or []
            for link in links:
                body = session().get(link.external_link, headers=link.http_headers or {}, timeout=600)
                body.raise_for_status()
                tables.append(pyarrow.ipc.open_stream(body.content).read_all())
                if len(tables) == 1:
                    first_batch(time.time())
            index = links[-1].next_chunk_index if links else None
            result = (
                api.get_statement_result_chunk_n(response.statement_id, index)
                if index is not None
                else None
            )
        if not tables:
            first_batch(time.time())
            return 0
        return pyarrow.concat_tables(tables).num_rows

    return run_query


def main():
    args = parse_args()
    connections = []
    lock = threading.Lock()
    first_batches = []

    def first_batch(at):
        with lock:
            first_batches.append(at)

    if args.client == "connector":
        run_one = connector_runner(args, connections, lock)
    else:
        run_one = sdk_runner(args)

    def run_query():
        """Blocking: one statement, result drained."""
        return run_one(first_batch)

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
        started_unix = time.time()
        started = time.perf_counter()
        results = asyncio.run(run_all())
        wall = time.perf_counter() - started
        finished_unix = time.time()
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
                "client": args.client,
                "queries": args.queries,
                "workers": args.workers or min(32, (os.cpu_count() or 1) + 4),
                "wall_s": wall,
                "started_unix": started_unix,
                "first_batch_unix": min(first_batches) if first_batches else None,
                "finished_unix": finished_unix,
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
