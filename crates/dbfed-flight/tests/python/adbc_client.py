"""ADBC Flight SQL client (DBAPI) against a dbfed Flight SQL server.

Usage: adbc_client.py URI USER PASSWORD JOIN_SQL
Prints one JSON object with what the server returned; the Rust test asserts on it.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql


def rows(table):
    return [list(r.values()) for r in table.to_pylist()]


def main():
    uri, user, password, join_sql = sys.argv[1:5]
    out = {}
    with flightsql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
        with conn.cursor() as cur:
            cur.execute(join_sql)
            table = cur.fetch_arrow_table()
            out["join_columns"] = table.column_names
            out["join_rows"] = rows(table)

            cur.execute(
                "SELECT n_name FROM samples.tpch.nation WHERE n_nationkey = ? OR n_nationkey = ? ORDER BY n_name",
                parameters=(7, 8),
            )
            out["param_rows"] = rows(cur.fetch_arrow_table())

            cur.execute("SELECT count(*) AS n FROM nation_local")
            out["local_count"] = rows(cur.fetch_arrow_table())

        objects = conn.adbc_get_objects(depth="all", catalog_filter="samples").read_all().to_pylist()
        tables = []
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for t in schema["db_schema_tables"] or []:
                    columns = [c["column_name"] for c in (t["table_columns"] or [])]
                    tables.append([catalog["catalog_name"], schema["db_schema_name"], t["table_name"], columns])
        out["objects"] = sorted(tables)

        schema = conn.adbc_get_table_schema("nation", catalog_filter="samples", db_schema_filter="tpch")
        out["nation_schema"] = [f.name for f in schema]

        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO nation_local VALUES (99, 'X', 0, 'y')")
            out["insert"] = "accepted"
        except Exception as e:  # noqa: BLE001 - the refusal is the point
            out["insert"] = type(e).__name__ + ": " + str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
