#!/usr/bin/env python3
"""TPC-H: meshql against the engines a user would pick instead, in one run.

On the same files (the `lake` layout of `meshql-tpch`: Parquet, orders and lineitem as
Delta), per query, alternating engines run by run so machine drift cancels out:

  meshql-flight   `meshql serve` over Flight SQL, an ADBC client fetching every row
  datafusion      DataFusion directly (Python bindings), in a worker process
  duckdb          DuckDB (`read_parquet`), in a worker process
  roapi           ROAPI over Flight SQL, an ADBC client fetching every row

Reports the median of N runs per query, totals, ratios of meshql to each peer, and each
process's peak RSS; writes JSON and a PNG chart to benches/results/. Figures only.

    python benches/tpch.py [--sf 1] [--runs 3] [--engines meshql-flight,duckdb,...]

Needs a release build (`cargo build --release --workspace --bins`) and Python packages:
`pip install -r benches/requirements.txt` (pinned: ADBC, pyarrow, DuckDB, DataFusion,
ROAPI, matplotlib).
"""

import argparse
import glob
import json
import os
import pathlib
import platform
import socket
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/meshql/target"))
TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]
DELTA = {"orders", "lineitem"}


def parquet_files(data: pathlib.Path, table: str) -> list:
    """The Parquet files behind a table (a Delta table written in one commit: all its files)."""
    if table in DELTA:
        return sorted(glob.glob(str(data / table / "*.parquet")))
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
            path = str(data / t) if t in DELTA else parquet_files(data, t)[0]
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
    def __init__(self, engine: str, data: pathlib.Path):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", engine, "--data", str(data)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def run(self, sql: str) -> dict:
        self.proc.stdin.write(json.dumps({"sql": sql}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------- Flight SQL servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlightServer:
    def __init__(self, cmd: list, url: str = None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "MESHQL_LOG": "error", "RUST_LOG": "error"})
        if url is None:  # meshql prints where it listens
            for line in self.proc.stdout:
                if line.startswith("listening on "):
                    url = line.split("listening on ", 1)[1].strip()
                    break
            else:
                raise SystemExit(f"{cmd[0]} exited: {self.proc.wait()}")
        else:  # wait for the port
            host, port = url.split("//")[1].split(":")
            for _ in range(300):
                try:
                    socket.create_connection((host, int(port)), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
        import adbc_driver_flightsql.dbapi as flightsql

        self.conn = flightsql.connect(url)

    def run(self, sql: str) -> dict:
        t0 = time.perf_counter()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetch_arrow_table().num_rows
            return {"seconds": time.perf_counter() - t0, "rows": rows}
        except Exception as e:
            return {"error": str(e).splitlines()[0]}

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait()


def peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------- the run

def prepare(args) -> tuple:
    data_dir = args.data or pathlib.Path.home() / f".cache/meshql/bench/tpch-sf{args.sf:g}"
    if not (data_dir / "mesh.yaml").exists():
        t0 = time.time()
        subprocess.run([args.tpch, "layout", "lake", "--sf", str(args.sf), "--out", data_dir], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"generated SF{args.sf:g} in {time.time() - t0:.0f}s")
    queries = data_dir / "queries"
    subprocess.run([args.tpch, "queries", "--sf", str(args.sf), "--out", queries], check=True)
    load = lambda kind, n: (queries / kind / f"q{n}.sql").read_text()
    return data_dir, {n: {"plain": load("plain", n), "mesh": load("mesh", n)} for n in range(1, 23)}


def start(engine: str, args, layout: pathlib.Path):
    """`layout`: the lake layout's directory (mesh.yaml, data/)."""
    data = layout / "data"
    if engine == "meshql-flight":
        return FlightServer([args.binary, "serve", "--config", layout / "mesh.yaml", "--bind", "127.0.0.1:0"])
    if engine == "roapi":
        port = free_port()
        cmd = [args.roapi, "--addr-flight-sql", f"127.0.0.1:{port}", "-a", f"127.0.0.1:{free_port()}",
               "-p", f"127.0.0.1:{free_port()}"]
        for t in TABLES:
            cmd += ["-t", f"{t}={data / t},format=delta" if t in DELTA else f"{t}={data / (t + '.parquet')}"]
        return FlightServer(cmd, f"grpc://127.0.0.1:{port}")
    return Worker(engine, data)


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
    ap.add_argument("--engines", default="meshql-flight,datafusion,duckdb,roapi")
    ap.add_argument("--binary", type=pathlib.Path, default=TARGET / "release/meshql")
    ap.add_argument("--tpch", type=pathlib.Path, default=TARGET / "release/meshql-tpch")
    ap.add_argument("--roapi", default=str(pathlib.Path(sys.executable).parent / "roapi"))
    ap.add_argument("--data", type=pathlib.Path, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.data)
    for b in (args.binary, args.tpch):
        if not pathlib.Path(b).exists():
            raise SystemExit(f"{b} is missing: cargo build --release --workspace --bins")
    engines = args.engines.split(",")
    data, queries = prepare(args)
    running = {e: start(e, args, data) for e in engines}
    times = {e: {n: [] for n in queries} for e in engines}
    errors = {e: {} for e in engines}
    rows = {e: {} for e in engines}
    try:
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
        rss = {e: peak_rss_mb(running[e].proc.pid) for e in engines}
    finally:
        for server in running.values():
            server.stop()

    results = {}
    for e in engines:
        medians = {str(n): {"median_s": statistics.median(t), "runs": t, "rows": rows[e][n]}
                   for n, t in times[e].items() if t}
        results[e] = {"queries": medians, "errors": {str(n): m for n, m in errors[e].items()},
                      "total_s": sum(m["median_s"] for m in medians.values()), "peak_rss_mb": rss[e]}
    # Rows must agree with the first engine that answered (a cheap cross-check).
    for n in queries:
        counts = {e: rows[e].get(n) for e in engines if n in rows[e]}
        if len(set(counts.values())) > 1:
            print(f"warning: Q{n} row counts differ: {counts}")

    answered_by_all = [str(n) for n in queries if all(str(n) in results[e]["queries"] for e in engines)]
    print(f"\nTPC-H SF{args.sf:g}, median of {args.runs} (after one warm-up), {os.cpu_count()} cores, "
          f"{platform.platform()}")
    base = "meshql-flight" if "meshql-flight" in engines else engines[0]
    print(f"| engine | total, 22 queries | total where every engine answered | {base} time ÷ this | peak RSS | failed |")
    print("|---|---|---|---|---|---|")
    common = {e: sum(results[e]["queries"][n]["median_s"] for n in answered_by_all) for e in engines}
    for e in engines:
        r = results[e]
        failed = ", ".join(f"Q{n}" for n in sorted(r["errors"], key=int)) or "-"
        ratio = common[base] / common[e] if common[e] else float("nan")
        print(f"| {e} | {r['total_s']:.2f} s | {common[e]:.2f} s ({len(answered_by_all)} queries) | "
              f"{ratio:.2f} | {r['peak_rss_mb']:.0f} MB | {failed} |")
    for e in engines:
        for n, m in sorted(results[e]["errors"].items(), key=lambda kv: int(kv[0])):
            print(f"  {e} Q{n}: {m[:160]}")
    out = ROOT / "benches/results"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"tpch-sf{args.sf:g}-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / f"{stem}.json").write_text(json.dumps(
        {"sf": args.sf, "runs": args.runs, "cores": os.cpu_count(), "platform": platform.platform(),
         "results": results}, indent=2))
    chart(results, engines, out / f"{stem}.png", f"TPC-H SF{args.sf:g}, {os.cpu_count()} cores")
    print(f"\nwrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()
