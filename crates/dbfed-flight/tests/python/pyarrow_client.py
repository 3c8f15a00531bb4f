"""pyarrow.flight client against a dbfed Flight SQL server, with hand-encoded Flight SQL
commands (pyarrow has no Flight SQL layer).

Usage: pyarrow_client.py URI USER PASSWORD JOIN_SQL
Prints one JSON object with what the server returned; the Rust test asserts on it.
"""

import json
import sys

import pyarrow.flight as flight


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def statement_query(sql):
    command = field(1, sql.encode())
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, type_url) + field(2, command)


def main():
    uri, user, password, join_sql = sys.argv[1:5]
    client = flight.FlightClient(uri)
    out = {}
    try:
        client.authenticate_basic_token(user, "wrong-" + password)
        out["wrong_password"] = "accepted"
    except flight.FlightUnauthenticatedError as e:
        out["wrong_password"] = "unauthenticated"
    except Exception as e:  # noqa: BLE001
        out["wrong_password"] = type(e).__name__
    header = client.authenticate_basic_token(user, password)
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_query(join_sql)), options)
    out["schema"] = info.schema.names
    table = None
    batches = 0
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket, options)
        for chunk in reader:
            batches += 1
        reader = client.do_get(endpoint.ticket, options)
        table = reader.read_all()
    out["join_rows"] = [list(r.values()) for r in table.to_pylist()]
    out["actions"] = sorted(a.type for a in client.list_actions(options))
    try:
        client.get_flight_info(flight.FlightDescriptor.for_command(statement_query("SELECT 1")))
        out["no_token"] = "accepted"
    except flight.FlightUnauthenticatedError:
        out["no_token"] = "unauthenticated"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
