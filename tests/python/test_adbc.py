"""meshql through the ADBC Flight SQL driver, as Jupyter users connect."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import PASSWORD


def connect(url, user="ada", password=PASSWORD):
    return flightsql.connect(url, db_kwargs={"username": user, "password": password})


def test_cross_domain_join_into_arrow(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT r.r_name AS region, count(*) AS orders
            FROM sales.orders.orders o
            JOIN customer.profile.customer c ON o.o_custkey = c.c_custkey
            JOIN customer.geo.nation n ON c.c_nationkey = n.n_nationkey
            JOIN customer.geo.region r ON n.n_regionkey = r.r_regionkey
            GROUP BY r.r_name ORDER BY r.r_name
            """
        )
        table = cur.fetch_arrow_table()
    assert table.num_rows == 5
    assert table.schema.field("region").type == pa.string()
    assert sum(table.column("orders").to_pylist()) == 15000
    assert table.column("region").to_pylist()[0] == "AFRICA"


def test_parameters(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT n_name FROM customer.geo.nation WHERE n_nationkey = ? OR n_name = ? ORDER BY n_name", (0, "PERU"))
        assert [r[0] for r in cur.fetchall()] == ["ALGERIA", "PERU"]
        # The same prepared statement with other values.
        cur.execute("SELECT count(*) FROM sales.orders.orders WHERE o_totalprice > ?", (400000.0,))
        (count,) = cur.fetchone()
        assert 0 < count < 15000


def test_the_most_parameters_a_statement_can_have(server):
    # 65,535 is PostgreSQL's bound too. The replies that carry the bound values must stay
    # under the 16 MiB a client accepts by default.
    n = 65_535
    sql = "SELECT count(*) FROM customer.geo.nation WHERE n_nationkey IN (" + ", ".join("?" * n) + ")"
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql, tuple(range(n)))
        assert cur.fetchone() == (25,)
        cur.execute(sql, tuple(range(100, 100 + n)))
        assert cur.fetchone() == (0,)


def test_get_objects_down_to_columns(server):
    with connect(server) as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"]: c for c in objects}
        assert {"sales", "customer", "supply", "mesh"} <= set(catalogs)
        schemas = {s["db_schema_name"]: s for s in catalogs["customer"]["catalog_db_schemas"]}
        tables = {t["table_name"]: t for t in schemas["profile"]["db_schema_tables"]}
        columns = [c["column_name"] for c in tables["customer"]["table_columns"]]
        assert "c_phone" in columns and columns[0] == "c_custkey"

        schema = conn.adbc_get_table_schema("lineitem", catalog_filter="sales", db_schema_filter="orders")
        assert "l_orderkey" in schema.names
        # Column descriptions travel as Flight SQL remarks in the column metadata (ADBC's
        # get_objects does not copy them into its `remarks` field; the schema has them).
        schema = conn.adbc_get_table_schema("customer", catalog_filter="customer", db_schema_filter="profile")
        assert schema.field("c_phone").metadata[b"ARROW:FLIGHT:SQL:REMARKS"] == b"Phone number"

        info = conn.adbc_get_info()
        assert info["vendor_name"] == "meshql"


def test_query_error_is_a_programming_error_with_the_message(server):
    with connect(server) as conn, conn.cursor() as cur:
        with pytest.raises(flightsql.ProgrammingError) as err:
            cur.execute("SELECT * FROM sales.orders.nope")
        assert "sales.orders.nope" in str(err.value)
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELEC 1")
        assert "SELEC" in str(err.value)


def test_wrong_password_is_refused(server):
    with pytest.raises(adbc_driver_manager.Error) as err:
        with connect(server, password="wrong") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "password" in str(err.value).lower() or "unauthenticated" in str(err.value).lower()


def test_explain_and_explain_analyze(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN SELECT o_orderkey FROM sales.orders.orders WHERE o_totalprice > 1000")
        plans = dict(zip(*cur.fetch_arrow_table().to_pydict().values()))
        # The Delta port's files are scanned as Parquet, with the filter pushed into the scan.
        physical = plans["physical_plan"]
        assert "DataSourceExec" in physical and "predicate=o_totalprice" in physical, physical
        cur.execute("EXPLAIN ANALYZE SELECT count(*) FROM sales.orders.orders WHERE o_totalprice > 1000")
        (plan,) = cur.fetch_arrow_table().column("plan").to_pylist()
        assert "metrics=[output_rows=" in plan
