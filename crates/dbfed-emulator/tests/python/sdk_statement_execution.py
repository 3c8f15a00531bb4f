"""databricks-sdk against the emulator: INLINE JSON (all chunks) and EXTERNAL_LINKS Arrow.

Env: DBFED_HOST (http://127.0.0.1:PORT), DBFED_TOKEN, DBFED_WAREHOUSE.
"""
import os
import sys
import urllib.request

import pyarrow as pa
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.sql import Disposition, Format, StatementState

host = os.environ["DBFED_HOST"]
token = os.environ["DBFED_TOKEN"]
warehouse = os.environ["DBFED_WAREHOUSE"]
N = 25
SQL = "SELECT * FROM (VALUES {}) AS t(n, s) ORDER BY n".format(
    ", ".join(f"({i}, 'row{i}')" for i in range(1, N + 1))
)

w = WorkspaceClient(host=host, token=token)
se = w.statement_execution

# INLINE + JSON_ARRAY, paging through every chunk (the emulator is started with small chunks).
r = se.execute_statement(statement=SQL, warehouse_id=warehouse, wait_timeout="30s")
assert r.status.state == StatementState.SUCCEEDED, r.status
assert r.manifest.total_row_count == N, r.manifest
assert r.manifest.total_chunk_count > 1, "expected several chunks"
rows = list(r.result.data_array or [])
next_index = r.result.next_chunk_index
while next_index is not None:
    chunk = se.get_statement_result_chunk_n(r.statement_id, next_index)
    rows.extend(chunk.data_array or [])
    next_index = chunk.next_chunk_index
assert rows == [[str(i), f"row{i}"] for i in range(1, N + 1)], rows
print(f"inline: {len(rows)} rows in {r.manifest.total_chunk_count} chunks")

# EXTERNAL_LINKS + ARROW_STREAM, downloaded without credentials and read with pyarrow.
r = se.execute_statement(
    statement=SQL,
    warehouse_id=warehouse,
    disposition=Disposition.EXTERNAL_LINKS,
    format=Format.ARROW_STREAM,
    wait_timeout="30s",
)
assert r.status.state == StatementState.SUCCEEDED, r.status
tables = []
links = list(r.result.external_links or [])
while links:
    link = links.pop(0)
    with urllib.request.urlopen(link.external_link) as resp:
        tables.append(pa.ipc.open_stream(resp.read()).read_all())
    if link.next_chunk_index is not None:
        links.extend(se.get_statement_result_chunk_n(r.statement_id, link.next_chunk_index).external_links)
table = pa.concat_tables(tables)
assert table.num_rows == N, table
ns = [int(v) for v in table.column(0).to_pylist()]
assert ns == list(range(1, N + 1)), ns
assert table.column(1).to_pylist() == [f"row{i}" for i in range(1, N + 1)]
print(f"arrow: {table.num_rows} rows in {len(tables)} chunks")

# A failing statement surfaces its error.
r = se.execute_statement(statement="SELEC 1", warehouse_id=warehouse, wait_timeout="30s")
assert r.status.state == StatementState.FAILED, r.status
assert r.status.error.message, r.status
print("ok")
sys.exit(0)
