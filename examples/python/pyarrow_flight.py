"""Query dbfed's Flight SQL server with plain pyarrow.flight (no Flight SQL library).

    dbfed serve --emulator --table sales_targets=examples/python/sales_targets.csv
    pip install pyarrow
    python examples/python/pyarrow_flight.py grpc://127.0.0.1:PORT

The URI is the `listening on grpc://...` first line of `dbfed serve` (or of `cargo run -p
dbfed-examples --example flight_server`, which serves the same tables).

Flight SQL is Flight with protobuf commands: GetFlightInfo on a descriptor holding a
`CommandStatementQuery` plans the query and returns its schema and endpoints; DoGet on each
endpoint's ticket streams the Arrow record batches. pyarrow has no Flight SQL layer, so the
command (one string field, wrapped in a `google.protobuf.Any`) is encoded by hand below.
"""

import sys

import pyarrow as pa
import pyarrow.flight as flight

QUERY = """
    SELECT t.nation, t.region_manager, count(*) AS customers, sum(c.c_acctbal) AS balance
    FROM samples.tpch.customer c
    JOIN samples.tpch.nation n ON c.c_nationkey = n.n_nationkey
    JOIN sales_targets t ON t.nation = n.n_name
    WHERE c.c_mktsegment = 'BUILDING'
    GROUP BY t.nation, t.region_manager
    ORDER BY t.nation
"""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    """A protobuf length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def statement_query(sql: str) -> bytes:
    """`Any { type_url, value: CommandStatementQuery { query: sql } }`, serialized."""
    command = _bytes_field(1, sql.encode("utf-8"))
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return _bytes_field(1, type_url) + _bytes_field(2, command)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: pyarrow_flight.py grpc://HOST:PORT", file=sys.stderr)
        return 2
    client = flight.FlightClient(sys.argv[1])
    # With `Auth::Basic` on the server:
    #   options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(user, password)])
    options = flight.FlightCallOptions(timeout=120)

    descriptor = flight.FlightDescriptor.for_command(statement_query(QUERY))
    info = client.get_flight_info(descriptor, options)
    print(f"GetFlightInfo: schema {info.schema.names}, {len(info.endpoints)} endpoint(s)")

    # Each endpoint's ticket is read from the server that planned it (no other locations).
    if not info.endpoints:
        print("the server returned no endpoint", file=sys.stderr)
        return 1
    tables = [client.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints]
    table = pa.concat_tables(tables)
    print(f"DoGet: {table.num_rows} rows")
    for row in table.to_pylist():
        print(f"  {row['nation']:<8} {row['region_manager']:<8} {row['customers']:>4} customers, "
              f"balance {float(row['balance']):>12,.2f}")

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
