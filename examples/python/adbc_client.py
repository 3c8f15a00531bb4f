"""Query dbfed's Flight SQL server with ADBC, the Arrow-native database API.

    dbfed serve --emulator --table sales_targets=examples/python/sales_targets.csv
    pip install adbc-driver-flightsql pyarrow
    python examples/python/adbc_client.py grpc://127.0.0.1:PORT

The URI is the `listening on grpc://...` first line of `dbfed serve` (`scripts/test` runs it
just so; `cargo run -p dbfed-examples --example flight_server` serves the same tables). The
query joins Databricks tables (`samples.tpch`) with `sales_targets`, a local file registered on
the server: the server federates, pushing the Databricks part to the warehouse. The result
arrives as Arrow, never as Python rows.
"""

import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql

# `?` markers are bound as statement parameters (a prepared statement on the server).
QUERY = """
    SELECT t.nation, t.region_manager, count(*) AS customers, sum(c.c_acctbal) AS balance
    FROM samples.tpch.customer c
    JOIN samples.tpch.nation n ON c.c_nationkey = n.n_nationkey
    JOIN sales_targets t ON t.nation = n.n_name
    WHERE c.c_mktsegment = ?
    GROUP BY t.nation, t.region_manager
    ORDER BY t.nation
"""


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: adbc_client.py grpc://HOST:PORT", file=sys.stderr)
        return 2
    uri = sys.argv[1]
    # With `Auth::Basic` on the server, add "username" and "password" to db_kwargs.
    # The server is read-only and has no transactions: autocommit says so up front.
    # Every call is bounded (seconds), so a stuck server fails the script instead of hanging it.
    timeouts = {
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: "120",
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_FETCH.value: "120",
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_UPDATE.value: "120",
    }
    with flightsql.connect(uri, db_kwargs=timeouts, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(QUERY, parameters=("BUILDING",))
        table = cur.fetch_arrow_table()

    print(f"ADBC: {table.num_rows} rows, columns {table.column_names}")
    for row in table.to_pylist():
        print(f"  {row['nation']:<8} {row['region_manager']:<8} {row['customers']:>4} customers, "
              f"balance {float(row['balance']):>12,.2f}")

    # Exit non-zero when the answer is wrong, so CI notices.
    nations = table.column("nation").to_pylist()
    if nations != ["BRAZIL", "FRANCE", "GERMANY", "JAPAN", "KENYA"]:
        print(f"unexpected nations: {nations}", file=sys.stderr)
        return 1
    if not all(n > 0 for n in table.column("customers").to_pylist()):
        print("every nation has BUILDING customers at TPC-H scale 0.01", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
