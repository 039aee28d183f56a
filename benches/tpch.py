#!/usr/bin/env python3
"""TPC-H: meshql against the engines a user would pick instead, in one run.

On the same files (the `lake` layout of `meshql-tpch`: Parquet, orders and lineitem as
Delta), per query, alternating engines run by run so machine drift cancels out:

  meshql-flight    `meshql serve` over Flight SQL, an ADBC client fetching every row
  meshql-embedded  meshql's embedded engine (`meshql-tpch run --worker`), no client
  meshql-mesh      the `mesh` layout over Flight SQL: customer in a real PostgreSQL
                   (a temp cluster), nation and region on a second meshql node
  meshql-mesh-orders  the same with orders (1.5M rows at SF1) in PostgreSQL too
  datafusion       DataFusion directly (Python bindings), in a worker process
  duckdb           DuckDB (`read_parquet`), in a worker process
  roapi            ROAPI over Flight SQL, an ADBC client fetching every row

Reports the median of N runs per query, totals, ratios of meshql to each peer, and each
process's peak RSS. Then streams the whole of lineitem (`SELECT *`) through meshql (from
the Delta files, and with the port's `cache:` holding it in memory) and ROAPI (which holds
its tables in memory) to an ADBC client reading batch by batch, each from a freshly started server:
rows/s, MB/s of Arrow, and the server's peak RSS. Also from a C++ Flight server (pyarrow)
that holds lineitem decoded in memory and does nothing else: how fast this ADBC client
can read on this machine at all, the ceiling for any server. Writes JSON and a PNG chart to
benches/results/. Figures only.

    python benches/tpch.py [--sf 1] [--runs 3] [--stream-runs 5] [--engines meshql-flight,duckdb,...] [--no-stream]

Needs a release build (`cargo build --release --workspace --bins`), Python packages
(`pip install -r benches/requirements.txt`: ADBC, pyarrow, DuckDB, DataFusion, ROAPI,
matplotlib) and, for the `meshql-mesh` engines, PostgreSQL server binaries and psql
(`apt-get install postgresql postgresql-client`).
"""

import argparse
import glob
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

from support import ROOT, TARGET, Postgres, free_port, peak_rss_mb, serve, wait_for_port

ENGINES = ["meshql-flight", "meshql-embedded", "meshql-mesh", "meshql-mesh-orders", "datafusion", "duckdb", "roapi"]
# The gateway mesh file of each `mesh` layout (`meshql-tpch layout mesh` writes both).
MESH_GATEWAYS = {"meshql-mesh": "mesh-layout.yaml", "meshql-mesh-orders": "mesh-orders-layout.yaml"}
TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
DELTA = {"orders", "lineitem"}


def delta_live_files(table_dir: pathlib.Path) -> set:
    """The files of a Delta table's latest version, replayed from its JSON commits."""
    if list((table_dir / "_delta_log").glob("*.checkpoint*.parquet")):
        raise SystemExit(f"{table_dir}: a checkpointed Delta log; regenerate with `meshql-tpch layout`")
    live = set()
    for commit in sorted((table_dir / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live.add(action["add"]["path"])
            elif "remove" in action:
                live.discard(action["remove"]["path"])
    return live


def parquet_files(data: pathlib.Path, table: str) -> list:
    """The Parquet files behind a table. The peers read a Delta table's directory as
    Parquet, so every file there must be live: stale files would be read twice."""
    if table in DELTA:
        files = sorted(glob.glob(str(data / table / "*.parquet")))
        stale = {pathlib.Path(f).name for f in files} - delta_live_files(data / table)
        if stale:
            raise SystemExit(f"{data / table} holds files its Delta log removed ({', '.join(sorted(stale))}): "
                             f"other engines would read them; delete the directory's layout and rerun")
        return files
    return [str(data / f"{table}.parquet")]


# ---------------------------------------------------------------- in-process peers, as workers

def worker(engine: str, data: pathlib.Path) -> None:
    """Read one SQL statement per line (JSON) from stdin, answer with its time and rows."""
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        for t in TABLES:
            files = ", ".join(f"'{f}'" for f in parquet_files(data, t))
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet([{files}])")

        def run(sql):
            result = con.execute(sql).arrow()
            # DuckDB 1.5 returns a reader; older versions a table.
            return (result.read_all() if hasattr(result, "read_all") else result).num_rows
    else:
        import datafusion

        ctx = datafusion.SessionContext()
        for t in TABLES:
            files = parquet_files(data, t)
            path = str(data / t) if t in DELTA else files[0]
            ctx.register_parquet(t, path)

        def run(sql):
            return sum(b.num_rows for b in ctx.sql(sql).collect())

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        sql = json.loads(line)["sql"]
        t0 = time.perf_counter()
        try:
            rows = run(sql)
            print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}), flush=True)
        except Exception as e:  # reported, the run goes on
            print(json.dumps({"error": str(e)}), flush=True)


class Worker:
    """A process answering one JSON statement per line (the Python peers, meshql-tpch run)."""

    def __init__(self, cmd: list, env: dict = None):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "MESHQL_LOG": "error", **(env or {})})
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise SystemExit(f"{cmd[0]} did not start: {self.proc.wait()}")
        self.pids = [self.proc.pid]

    def run(self, sql: str) -> dict:
        self.proc.stdin.write(json.dumps({"sql": sql}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------- Flight SQL servers

class FlightClient:
    """An ADBC connection to a Flight SQL server; stops `procs` (the server first) at the end."""

    def __init__(self, url: str, procs: list, cleanup=None):
        import warnings

        import adbc_driver_flightsql.dbapi as flightsql

        # Flight SQL has no transactions; the DB-API wrapper warns on every connect.
        warnings.filterwarnings("ignore", message="Cannot disable autocommit")

        self.conn = flightsql.connect(url)
        self.procs = procs
        self.pids = [p.pid for p in procs]
        self.cleanup = cleanup

    def run(self, sql: str) -> dict:
        t0 = time.perf_counter()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetch_arrow_table().num_rows
            return {"seconds": time.perf_counter() - t0, "rows": rows}
        except Exception as e:
            return {"error": str(e).splitlines()[0]}

    def stream(self, sql: str) -> dict:
        """Read the result batch by batch, keeping none: seconds, rows, Arrow bytes."""
        t0 = time.perf_counter()
        rows = nbytes = 0
        with self.conn.cursor() as cur:
            cur.execute(sql)
            for batch in cur.fetch_record_batch():
                rows += batch.num_rows
                nbytes += batch.nbytes
        return {"seconds": time.perf_counter() - t0, "rows": rows, "bytes": nbytes}

    def stop(self) -> None:
        self.conn.close()
        for p in self.procs:
            p.terminate()
            p.wait()
        if self.cleanup:
            self.cleanup()


def roapi(args, data: pathlib.Path, tables: list) -> FlightClient:
    port = free_port()
    cmd = [args.roapi, "--addr-flight-sql", f"127.0.0.1:{port}", "-a", f"127.0.0.1:{free_port()}",
           "-p", f"127.0.0.1:{free_port()}"]
    for t in tables:
        cmd += ["-t", f"{t}={data / t},format=delta" if t in DELTA else f"{t}={data / (t + '.parquet')}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RUST_LOG": "error"})
    wait_for_port(f"grpc://127.0.0.1:{port}", 300)
    return FlightClient(f"grpc://127.0.0.1:{port}", [proc])


def mesh_layout(args, layout: pathlib.Path, gateway_mesh: str) -> FlightClient:
    """PostgreSQL loaded with customer and orders, the geo node, and the gateway."""
    t0 = time.time()
    pg = Postgres()
    try:
        pg.psql("postgres", "CREATE DATABASE tpch")
        pg.psql("tpch", file=layout / "postgres.sql")
        node, node_url = serve(args.binary, layout / "node/mesh.yaml")
        env = {"TPCH_PG_PORT": str(pg.port), "TPCH_PG_USER": "postgres", "TPCH_PG_PASSWORD": "unused",
               "TPCH_NODE_URL": node_url}
        gateway, url = serve(args.binary, layout / gateway_mesh, env=env)
    except BaseException:
        pg.stop()
        raise
    print(f"{gateway_mesh}: PostgreSQL loaded and two nodes up in {time.time() - t0:.0f}s", flush=True)
    client = FlightClient(url, [gateway, node], cleanup=pg.stop)
    client.pids.append(pg.pid())
    return client


# ---------------------------------------------------------------- the run

def prepare(args, engines: list) -> tuple:
    data_dir = args.data or pathlib.Path.home() / f".cache/meshql/bench/tpch-sf{args.sf:g}"
    layout = "mesh" if set(MESH_GATEWAYS) & set(engines) else "lake"
    # mesh-orders-layout.yaml is the newest file of the `mesh` layout.
    done = data_dir / ("mesh-orders-layout.yaml" if layout == "mesh" else "mesh.yaml")
    if not done.exists():
        t0 = time.time()
        subprocess.run([args.tpch, "layout", layout, "--sf", str(args.sf), "--out", data_dir], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"generated SF{args.sf:g} ({layout} layout) in {time.time() - t0:.0f}s")
    for t in DELTA:  # fails on stale files before any engine starts
        parquet_files(data_dir / "data", t)
    queries = data_dir / "queries"
    subprocess.run([args.tpch, "queries", "--sf", str(args.sf), "--out", queries], check=True)
    load = lambda kind, n: (queries / kind / f"q{n}.sql").read_text()
    return data_dir, {n: {"plain": load("plain", n), "mesh": load("mesh", n)} for n in range(1, 23)}


def start(engine: str, args, layout: pathlib.Path):
    """`layout`: the layouts' directory (mesh.yaml, the mesh gateways' files, data/)."""
    data = layout / "data"
    if engine == "meshql-flight":
        proc, url = serve(args.binary, layout / "mesh.yaml")
        return FlightClient(url, [proc])
    if engine == "meshql-embedded":
        return Worker([args.tpch, "run", "--worker", "--sf", str(args.sf), "--config", layout / "mesh.yaml"])
    if engine in MESH_GATEWAYS:
        return mesh_layout(args, layout, MESH_GATEWAYS[engine])
    if engine == "roapi":
        return roapi(args, data, TABLES)
    return Worker([sys.executable, __file__, "--worker", engine, "--data", str(data)])


# The client's ceiling in the streaming phase: see serve_from_memory.
CEILING = "arrow-cpp-in-memory"
# meshql streaming lineitem held in memory by the port's `cache:`.
CACHED = "meshql-cached"


def serve_from_memory(data: pathlib.Path, port: int) -> None:
    """A Flight server answering every query with lineitem, read into memory first
    (the layout writes the Delta table in one commit, so its Parquet files are the table)."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.flight as fl

    table = ds.dataset(sorted(glob.glob(str(data / "lineitem" / "*.parquet"))), format="parquet").to_table()
    table = pa.Table.from_batches(table.combine_chunks().to_batches(max_chunksize=8192))
    schema = table.schema

    class Memory(fl.FlightServerBase):
        def get_flight_info(self, context, descriptor):
            if b"CommandStatementQuery" not in (descriptor.command or b""):
                return fl.FlightInfo(schema, descriptor, [], 0, 0)  # SqlInfo and the like: nothing
            return fl.FlightInfo(schema, descriptor, [fl.FlightEndpoint(b"lineitem", [])], -1, -1)

        def do_get(self, context, ticket):
            return fl.RecordBatchStream(table)

    Memory(f"grpc://127.0.0.1:{port}").serve()


def cached_mesh(layout: pathlib.Path) -> pathlib.Path:
    """A mesh of lineitem alone with `cache:`, held in memory as ROAPI holds its tables."""
    path = layout / "mesh-cached.yaml"
    path.write_text("# Written by benches/tpch.py: lineitem held in memory (`cache:`).\n"
                    "version: 1\nsources:\n  lake: { kind: local, root: ./data }\n"
                    "domains:\n  sales:\n    products:\n      orders:\n        output_ports:\n"
                    "          lineitem: { source: lake, format: delta, path: lineitem, cache: { max_mb: 4096 } }\n")
    return path


def stream_lineitem(args, layout: pathlib.Path, engines: list) -> dict:
    """`SELECT *` of lineitem from a fresh server per run, alternating engines. The first
    round is a warm-up, as for the queries: the first streams after the 22 queries were
    every engine's slowest (the machine still settling), and are not counted."""
    runs = {e: [] for e in engines}
    for round in range(args.stream_runs + 1):
        for e in engines:
            if e in ("meshql-flight", CACHED):
                mesh = layout / "mesh.yaml" if e == "meshql-flight" else cached_mesh(layout)
                proc, url = serve(args.binary, mesh)
                server, sql = FlightClient(url, [proc]), "SELECT * FROM sales.orders.lineitem"
            elif e == CEILING:
                port = free_port()
                proc = subprocess.Popen([sys.executable, __file__, "--serve-memory", str(port),
                                         "--data", str(layout / "data")])
                wait_for_port(f"grpc://127.0.0.1:{port}", 300)
                server, sql = FlightClient(f"grpc://127.0.0.1:{port}", [proc]), "SELECT * FROM lineitem"
            else:
                server, sql = roapi(args, layout / "data", ["lineitem"]), "SELECT * FROM lineitem"
            try:
                before = peak_rss_mb(server.pids[0])
                out = server.stream(sql)
                out["peak_rss_mb"] = peak_rss_mb(server.pids[0])
                out["rss_before_mb"] = before
            finally:
                server.stop()
            if round > 0:
                runs[e].append(out)
            print(f"stream {e:14} {out['rows'] / out['seconds'] / 1e6:6.2f} M rows/s  "
                  f"{out['bytes'] / out['seconds'] / 1e6:7.0f} MB/s  peak RSS {out['peak_rss_mb']:.0f} MB"
                  f"{'  (warm-up)' if round == 0 else ''}", flush=True)
    result = {}
    for e, outs in runs.items():
        seconds = statistics.median(o["seconds"] for o in outs)
        result[e] = {"median_s": seconds, "rows": outs[0]["rows"], "bytes": outs[0]["bytes"],
                     "rows_per_s": outs[0]["rows"] / seconds, "mb_per_s": outs[0]["bytes"] / seconds / 1e6,
                     "peak_rss_mb": max(o["peak_rss_mb"] for o in outs),
                     "rss_before_mb": max(o["rss_before_mb"] for o in outs), "runs": [o["seconds"] for o in outs]}
    return result


def chart(results: dict, engines: list, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        xs = [q - 0.4 + width * (i + 0.5) for q in range(1, 23)]
        ys = [results[engine]["queries"].get(str(q), {}).get("median_s", 0) for q in range(1, 23)]
        total = results[engine]["total_s"]
        ax.bar(xs, ys, width, label=f"{engine} (total {total:.2f} s)")
    ax.set_xticks(range(1, 23), [f"Q{q}" for q in range(1, 23)])
    ax.set_ylabel("median seconds (lower is better)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"any of {','.join(ENGINES)}")
    ap.add_argument("--no-stream", action="store_true", help="skip streaming lineitem")
    ap.add_argument("--stream-runs", type=int, default=5,
                    help="streams of lineitem per engine after a warm-up round (each varies by up to 25%%)")
    ap.add_argument("--binary", type=pathlib.Path, default=TARGET / "release/meshql")
    ap.add_argument("--tpch", type=pathlib.Path, default=TARGET / "release/meshql-tpch")
    ap.add_argument("--roapi", default=str(pathlib.Path(sys.executable).parent / "roapi"))
    ap.add_argument("--data", type=pathlib.Path, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--serve-memory", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.data)
    if args.serve_memory:
        return serve_from_memory(args.data, args.serve_memory)
    for b in (args.binary, args.tpch):
        if not pathlib.Path(b).exists():
            raise SystemExit(f"{b} is missing: cargo build --release --workspace --bins")
    engines = args.engines.split(",")
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; known: {', '.join(ENGINES)}")
    data, queries = prepare(args, engines)
    running = {}
    try:
        for e in engines:
            running[e] = start(e, args, data)
        times = {e: {n: [] for n in queries} for e in engines}
        errors = {e: {} for e in engines}
        rows = {e: {} for e in engines}
        for n, q in queries.items():
            # One warm-up, then runs alternating engines.
            for r in range(args.runs + 1):
                for e in engines:
                    out = running[e].run(q["mesh"] if e.startswith("meshql") else q["plain"])
                    if "error" in out:
                        errors[e][n] = out["error"]
                    elif r > 0:
                        times[e][n].append(out["seconds"])
                        rows[e][n] = out["rows"]
            line = "  ".join(
                f"{e} {statistics.median(times[e][n]):.3f}s" if times[e][n] else f"{e} error"
                for e in engines)
            print(f"Q{n:<2} {line}", flush=True)
        # The first process is the engine's (for the mesh engines, the gateway); others are
        # helpers (the geo node, PostgreSQL's postmaster).
        rss = {e: [peak_rss_mb(pid) for pid in running[e].pids] for e in engines}
    finally:
        for server in running.values():
            server.stop()
    streamed = [e for e in ("meshql-flight", "roapi") if e in engines]
    streamed[1:1] = [CACHED] if "meshql-flight" in engines else []
    streamed += [CEILING] if streamed else []
    stream = {} if args.no_stream or not streamed else stream_lineitem(args, data, streamed)

    results = {}
    for e in engines:
        medians = {str(n): {"median_s": statistics.median(t), "runs": t, "rows": rows[e][n]}
                   for n, t in times[e].items() if t}
        results[e] = {"queries": medians, "errors": {str(n): m for n, m in errors[e].items()},
                      "total_s": sum(m["median_s"] for m in medians.values()), "peak_rss_mb": rss[e][0],
                      "helper_peak_rss_mb": rss[e][1:]}
    # Rows must agree with the first engine that answered (a cheap cross-check).
    for n in queries:
        counts = {e: rows[e].get(n) for e in engines if n in rows[e]}
        if len(set(counts.values())) > 1:
            print(f"warning: Q{n} row counts differ: {counts}")

    answered_by_all = [str(n) for n in queries if all(str(n) in results[e]["queries"] for e in engines)]
    print(f"\nTPC-H SF{args.sf:g}, median of {args.runs} (after one warm-up), {os.cpu_count()} cores, "
          f"{platform.platform()}")
    base = next((e for e in engines if e.startswith("meshql")), engines[0])
    print(f"| engine | total, 22 queries | total where every engine answered | {base} time ÷ this | peak RSS | failed |")
    print("|---|---|---|---|---|---|")
    common = {e: sum(results[e]["queries"][n]["median_s"] for n in answered_by_all) for e in engines}
    for e in engines:
        r = results[e]
        failed = ", ".join(f"Q{n}" for n in sorted(r["errors"], key=int)) or "-"
        ratio = common[base] / common[e] if common[e] else float("nan")
        helpers = f" (+ {', '.join(f'{m:.0f}' for m in r['helper_peak_rss_mb'])} MB helpers)" \
            if r["helper_peak_rss_mb"] else ""
        print(f"| {e} | {r['total_s']:.2f} s | {common[e]:.2f} s ({len(answered_by_all)} queries) | "
              f"{ratio:.2f} | {r['peak_rss_mb']:.0f} MB{helpers} | {failed} |")
    for e in engines:
        for n, m in sorted(results[e]["errors"].items(), key=lambda kv: int(kv[0])):
            print(f"  {e} Q{n}: {m[:160]}")
    if stream:
        print(f"\nStreaming lineitem (SELECT *, {next(iter(stream.values()))['rows']:,} rows) to an ADBC client "
              f"reading batch by batch, fresh server per run, median of {args.stream_runs} after a warm-up round")
        print("| server | time | rows/s | MB/s (Arrow) | server peak RSS (at start) |")
        print("|---|---|---|---|---|")
        for e, r in stream.items():
            print(f"| {e} | {r['median_s']:.2f} s | {r['rows_per_s'] / 1e6:.2f} M | {r['mb_per_s']:.0f} | "
                  f"{r['peak_rss_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB) |")
        for e in ("meshql-flight", CACHED):
            if e in stream and "roapi" in stream:
                print(f"{e} / ROAPI throughput: {stream[e]['rows_per_s'] / stream['roapi']['rows_per_s']:.2f}x")
        for e in ("meshql-flight", CACHED, "roapi"):
            if e in stream:
                print(f"{e} / client ceiling ({CEILING}): "
                      f"{stream[e]['rows_per_s'] / stream[CEILING]['rows_per_s']:.2f}x")
    out = ROOT / "benches/results"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"tpch-sf{args.sf:g}-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / f"{stem}.json").write_text(json.dumps(
        {"sf": args.sf, "runs": args.runs, "stream_runs": args.stream_runs, "cores": os.cpu_count(),
         "platform": platform.platform(), "results": results, "stream_lineitem": stream}, indent=2))
    chart(results, engines, out / f"{stem}.png", f"TPC-H SF{args.sf:g}, {os.cpu_count()} cores")
    print(f"\nwrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()
