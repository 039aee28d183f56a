"""meshql through flightsql-dbapi's SQLAlchemy dialect, the way Superset browses a
database (it uses pyarrow.flight underneath, with Basic sign-in then a bearer token)."""

from urllib.parse import quote

from sqlalchemy import create_engine, inspect, text

from conftest import PASSWORD


def engine_for(url):
    host_port = url.split("//", 1)[1]
    return create_engine(f"datafusion://ada:{quote(PASSWORD, safe='')}@{host_port}?insecure=true")


def test_inspector_lists_schemas_tables_and_columns(server):
    insp = inspect(engine_for(server))
    schemas = insp.get_schema_names()
    assert {"orders", "profile", "geo", "catalog"} <= set(schemas)
    assert "customer" in insp.get_table_names(schema="profile")
    columns = {c["name"]: c for c in insp.get_columns("customer", schema="profile")}
    assert "c_phone" in columns and "c_custkey" in columns


def test_query_through_sqlalchemy(server):
    with engine_for(server).connect() as conn:
        rows = conn.execute(text("SELECT n_name FROM customer.geo.nation WHERE n_regionkey = 0 ORDER BY n_name")).fetchall()
    assert [r[0] for r in rows] == ["ALGERIA", "ETHIOPIA", "KENYA", "MOROCCO", "MOZAMBIQUE"]
