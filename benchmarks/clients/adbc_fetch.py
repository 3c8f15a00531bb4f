"""Scenario 5: an ADBC Python client reading a result from dbfed's Flight SQL server.

Connects with `adbc_driver_flightsql.dbapi`, runs `--sql` and reads the whole result with
`cursor.fetch_arrow_table()`, the way pandas/polars users do. Prints one JSON line on stdout: rows,
Arrow bytes (`Table.nbytes`), start/end timestamps (Unix seconds), wall time, peak RSS.

Usage: adbc_fetch.py --uri grpc://127.0.0.1:PORT --sql SQL
Needs the venv of requirements-test.txt with adbc-driver-flightsql.
"""
import argparse
import json
import sys
import threading
import time


def status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line[len(field):].split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", required=True)
    p.add_argument("--sql", required=True)
    args = p.parse_args()

    import adbc_driver_flightsql.dbapi as flightsql

    peak = [status_bytes("VmRSS:")]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], status_bytes("VmRSS:"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = flightsql.connect(args.uri)
    try:
        cursor = conn.cursor()
        started_unix = time.time()
        started = time.perf_counter()
        cursor.execute(args.sql)
        table = cursor.fetch_arrow_table()
        wall = time.perf_counter() - started
        finished_unix = time.time()
        cursor.close()
    finally:
        conn.close()
        stop.set()
        sampler.join(5)
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "arrow_bytes": table.nbytes,
                "wall_s": wall,
                "started_unix": started_unix,
                "finished_unix": finished_unix,
                "peak_rss_bytes": peak[0],
                "vm_hwm_bytes": status_bytes("VmHWM:"),
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
