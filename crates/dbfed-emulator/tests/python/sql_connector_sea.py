"""databricks-sql-connector (use_sea=True) over HTTPS against the emulator.

Env: DBFED_PORT, DBFED_TOKEN, DBFED_WAREHOUSE, DBFED_STATEMENTS_URL (introspection endpoint).
"""
import json
import os
import threading
import time
import urllib.request
import ssl

from databricks import sql

port = int(os.environ["DBFED_PORT"])
token = os.environ["DBFED_TOKEN"]
warehouse = os.environ["DBFED_WAREHOUSE"]
statements_url = os.environ["DBFED_STATEMENTS_URL"]
N = 1000
SQL = "SELECT * FROM (VALUES {}) AS t(n, s) ORDER BY n".format(
    ", ".join(f"({i}, 'row{i}')" for i in range(1, N + 1))
)

insecure = ssl.create_default_context()
insecure.check_hostname = False
insecure.verify_mode = ssl.CERT_NONE


def statements():
    with urllib.request.urlopen(statements_url, context=insecure) as resp:
        return json.load(resp)


conn = sql.connect(
    server_hostname="127.0.0.1",
    _port=port,
    http_path=f"/sql/1.0/warehouses/{warehouse}",
    access_token=token,
    use_sea=True,
    _tls_no_verify=True,
)
cur = conn.cursor()

# Arrow results through EXTERNAL_LINKS + LZ4 (several chunks).
cur.execute(SQL)
table = cur.fetchall_arrow()
assert table.num_rows == N, table.num_rows
assert [int(v) for v in table.column(0).to_pylist()] == list(range(1, N + 1))
assert table.column(1).to_pylist()[-1] == f"row{N}"
print(f"fetchall_arrow: {table.num_rows} rows")

# Row API.
cur.execute("SELECT 'hello' AS greeting, 42 AS answer")
row = cur.fetchone()
assert row[0] == "hello" and int(row[1]) == 42, row
print("fetchone:", row)

# Named parameters.
cur.execute("SELECT :a AS a, :b AS b", {"a": 7, "b": "x"})
row = cur.fetchone()
assert int(row[0]) == 7 and row[1] == "x", row
print("parameters:", row)
sent = [s for s in statements() if s["sql"] == "SELECT :a AS a, :b AS b"]
assert sent and {p["name"] for p in sent[-1]["parameters"]} == {"a", "b"}, sent

# Cancel a long statement from another thread.
long_sql = "SELECT count(*) FROM samples.tpch.lineitem a JOIN samples.tpch.lineitem b ON a.l_linenumber = b.l_linenumber"
errors = []


def run_long():
    c = conn.cursor()
    try:
        c.execute(long_sql)
        c.fetchall()
    except Exception as e:  # noqa: BLE001
        errors.append(e)
    finally:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass


long_cursor_thread = threading.Thread(target=run_long)
cancel_cursor = None
long_cursor_thread.start()
deadline = time.time() + 60
running = None
while time.time() < deadline and running is None:
    running = next((s for s in statements() if s["sql"] == long_sql and s["state"] == "RUNNING"), None)
    time.sleep(0.1)
assert running is not None, ("the long statement never ran", errors, [s for s in statements() if "lineitem" in s["sql"]])
req = urllib.request.Request(
    f"https://127.0.0.1:{port}/api/2.0/sql/statements/{running['id']}/cancel",
    method="POST",
    data=b"{}",
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
)
urllib.request.urlopen(req, context=insecure).read()
long_cursor_thread.join(60)
assert not long_cursor_thread.is_alive(), "execute did not return after cancel"
state = next(s for s in statements() if s["id"] == running["id"])["state"]
assert state == "CANCELED", state
print("canceled:", running["id"], errors[:1])

cur.close()
conn.close()
print("ok")
