#!/usr/bin/env python3
"""Federation benchmark: what pushdown and dynamic filters save on real sources.

TPC-H lineitem and customer live in a real PostgreSQL cluster (started in a temp dir on
loopback), orders in a Delta table. One `meshql serve` per configuration answers, over
Flight SQL, to an ADBC client that fetches every row:

  default               whole-subplan pushdown and dynamic filters (what users get)
  no-subplan-pushdown   PostgreSQL gets single-table statements (filters and columns only)
  no-dynamic-filters    joins do not pass their build-side keys to the other side

Per query and configuration: the median time of N runs, the rows and bytes (Arrow)
meshql received from PostgreSQL and the rows it read from the Delta scan (both from
EXPLAIN ANALYZE), and ratios against the default. Results of every configuration are
compared, so a configuration that answers differently fails the run. Figures only,
never assertions about speed.

    python benches/federation_pushdown.py [--sf 1] [--runs 3] [--binary PATH]

Needs: a release build (`cargo build --release --workspace --bins`), PostgreSQL 15
server binaries and psql (`apt-get install postgresql postgresql-client`), and the test
venv (scripts/test.sh makes it) or `pip install pyarrow adbc-driver-flightsql`.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import adbc_driver_flightsql.dbapi as flightsql

from support import ROOT, TARGET, Postgres, serve

SCHEMA = """
CREATE TABLE lineitem (
  l_orderkey bigint, l_partkey bigint, l_suppkey bigint, l_linenumber integer,
  l_quantity numeric(15,2), l_extendedprice numeric(15,2), l_discount numeric(15,2),
  l_tax numeric(15,2), l_returnflag varchar(1), l_linestatus varchar(1), l_shipdate date,
  l_commitdate date, l_receiptdate date, l_shipinstruct varchar(25), l_shipmode varchar(10),
  l_comment varchar(44));
CREATE TABLE customer (
  c_custkey bigint PRIMARY KEY, c_name varchar(25), c_address varchar(40), c_nationkey bigint,
  c_phone varchar(15), c_acctbal numeric(15,2), c_mktsegment varchar(10), c_comment varchar(117));
"""

QUERIES = {
    # TPC-H Q1: an aggregate over almost all of lineitem.
    "Q1": """SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
  sum(l_extendedprice) AS sum_base_price,
  sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
  sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
  avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc,
  count(*) AS count_order
FROM bench.pg.lineitem WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus""",
    # TPC-H Q6: a selective filter and one sum.
    "Q6": """SELECT sum(l_extendedprice * l_discount) AS revenue FROM bench.pg.lineitem
WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24""",
    # A day of orders (Delta, small after its filter) joined to customer (PostgreSQL):
    # the orders' customer keys can reach PostgreSQL's statement.
    "join_pg_probe": """SELECT c_mktsegment, count(*) AS orders, sum(o_totalprice) AS total
FROM bench.lake.orders JOIN bench.pg.customer ON c_custkey = o_custkey
WHERE o_orderdate = DATE '1995-03-15' GROUP BY c_mktsegment ORDER BY c_mktsegment""",
    # Customers of one nation and segment (PostgreSQL, small) joined to orders (Delta):
    # their keys can reach the Delta scan.
    "join_lake_probe": """SELECT count(*) AS orders, sum(o_totalprice) AS total
FROM bench.pg.customer JOIN bench.lake.orders ON c_custkey = o_custkey
WHERE c_nationkey = 7 AND c_mktsegment = 'BUILDING'""",
}

CONFIGS = {
    "default": [],
    "no-subplan-pushdown": ["--no-subplan-pushdown"],
    "no-dynamic-filters": ["--no-dynamic-filters"],
}


def generate(tpch: pathlib.Path, sf: float, data: pathlib.Path) -> None:
    stamp = data / "complete"
    if stamp.exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    subprocess.run([tpch, "generate", "--sf", str(sf), "--format", "csv", "--out", data, "lineitem", "customer"], check=True)
    subprocess.run([tpch, "generate", "--sf", str(sf), "--format", "delta", "--out", data, "orders"], check=True)
    stamp.write_text("")
    print(f"generated SF{sf} in {time.time() - t0:.0f}s")


def start_postgres(data: pathlib.Path) -> Postgres:
    pg = Postgres()
    t0 = time.time()
    pg.psql("postgres", "CREATE DATABASE tpch")
    pg.psql("tpch", SCHEMA)
    for table in ["customer", "lineitem"]:
        pg.psql("tpch", f"\\copy {table} FROM '{data / (table + '.csv')}' WITH (FORMAT csv, HEADER true)")
    pg.psql("tpch", "ANALYZE")
    print(f"loaded PostgreSQL in {time.time() - t0:.0f}s")
    return pg


def write_mesh(path: pathlib.Path, pg: Postgres, data: pathlib.Path) -> None:
    path.write_text(f"""version: 1
sources:
  pg: {{ kind: postgres, host: 127.0.0.1, port: {pg.port}, user: postgres, dbname: tpch,
        sslmode: disable, query_timeout_s: 1800 }}
  lake: {{ kind: local, root: "{data}" }}
domains:
  bench:
    products:
      pg:
        output_ports:
          lineitem: {{ source: pg, table: public.lineitem }}
          customer: {{ source: pg, table: public.customer }}
      lake:
        output_ports:
          orders: {{ source: lake, format: delta, path: orders }}
""")


UNITS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def metric(line: str, name: str) -> float:
    m = re.search(rf"\b{name}=([0-9.]+)\s?([KMBT]?)\b", line)
    return float(m.group(1)) * UNITS[m.group(2)] if m else 0.0


def transfer(conn, sql: str) -> dict:
    """Rows and bytes received from PostgreSQL, rows out of the Delta scan."""
    with conn.cursor() as cur:
        cur.execute(f"EXPLAIN ANALYZE {sql}")
        plan = "\n".join(str(row[1]) for row in cur.fetchall())
    remote = [l for l in plan.splitlines() if "VirtualExecutionPlan" in l]
    # The Delta scan's Parquet reader (DeltaScan wraps it and reports the same rows).
    lake = [l for l in plan.splitlines() if "DataSourceExec" in l and "orders" in l]
    if not lake:
        lake = [l for l in plan.splitlines() if "DeltaScan" in l]
    return {
        "pg_rows": sum(metric(l, "remote_rows") for l in remote),
        "pg_bytes": sum(metric(l, "remote_bytes") for l in remote),
        "pg_runtime_filters": sum(metric(l, "runtime_filters") for l in remote),
        "lake_rows": sum(metric(l, "output_rows") for l in lake),
    }


def fmt_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--binary", type=pathlib.Path, default=TARGET / "release/meshql")
    ap.add_argument("--tpch", type=pathlib.Path, default=TARGET / "release/meshql-tpch")
    ap.add_argument("--data", type=pathlib.Path, default=None, help="data cache [~/.cache/meshql/bench/federation-sfN]")
    args = ap.parse_args()
    for b in (args.binary, args.tpch):
        if not b.exists():
            raise SystemExit(f"{b} is missing: cargo build --release --workspace --bins")
    data = args.data or pathlib.Path.home() / f".cache/meshql/bench/federation-sf{args.sf:g}"
    generate(args.tpch, args.sf, data)
    pg = start_postgres(data)
    results = {}
    try:
        work = pathlib.Path(tempfile.mkdtemp(prefix="meshql-bench-"))
        mesh = work / "mesh.yaml"
        write_mesh(mesh, pg, data)
        answers = {}
        for config, flags in CONFIGS.items():
            proc, url = serve(args.binary, mesh, flags)
            try:
                with flightsql.connect(url) as conn:
                    for name, sql in QUERIES.items():
                        times = []
                        for _ in range(args.runs):
                            t0 = time.perf_counter()
                            with conn.cursor() as cur:
                                cur.execute(sql)
                                table = cur.fetch_arrow_table()
                            times.append(time.perf_counter() - t0)
                        answer = table.to_pylist()
                        if name in answers and answers[name] != answer:
                            raise SystemExit(f"{name}: {config} answers differently than {answers[name]!r}: {answer!r}")
                        answers.setdefault(name, answer)
                        results.setdefault(name, {})[config] = {"median_s": statistics.median(times), "runs": times,
                                                                **transfer(conn, sql)}
                        r = results[name][config]
                        print(f"{name:16} {config:20} {r['median_s']:8.3f}s  pg rows {fmt_count(r['pg_rows']):>7}"
                              f"  pg bytes {fmt_count(r['pg_bytes']):>7}  lake rows {fmt_count(r['lake_rows']):>7}", flush=True)
            finally:
                proc.terminate()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    finally:
        pg.stop()

    print(f"\nSF{args.sf:g}, median of {args.runs}, {os.cpu_count()} cores, {platform.platform()}")
    print("| query | configuration | time | ratio to default | rows from PostgreSQL | bytes from PostgreSQL | rows from Delta |")
    print("|---|---|---|---|---|---|---|")
    for name, by_config in results.items():
        base = by_config["default"]["median_s"]
        for config, r in by_config.items():
            print(f"| {name} | {config} | {r['median_s']:.2f} s | {r['median_s'] / base:.1f}x | {fmt_count(r['pg_rows'])} "
                  f"| {fmt_count(r['pg_bytes'])}B | {fmt_count(r['lake_rows'])} |")
    out = ROOT / "benches/results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"federation_pushdown-sf{args.sf:g}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"sf": args.sf, "runs": args.runs, "cores": os.cpu_count(),
                                "platform": platform.platform(), "results": results}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
