#!/usr/bin/env python3
"""Streaming benchmark: `SELECT *` of a large output port through `meshql serve` to an
ADBC client that reads batch by batch. Reports rows/s, GB/s of Arrow and the server's
peak RSS, for a small and a large table, so a peak that grows with the result shows up
as a ratio. Figures, never assertions.

    python benches/stream_adbc.py [--gb 4] [--binary PATH] [--memory-limit 1GiB]

Needs the test venv (scripts/test.sh makes it) or `pip install pyarrow adbc-driver-flightsql`.
Build meshql in release mode for figures worth quoting: `cargo build --release --bin meshql`.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_GROUP = 1 << 20


def make_table(path: pathlib.Path, target_bytes: int) -> None:
    """A Parquet file of about `target_bytes` of Arrow data (ints, floats, short strings)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = None
    written, start = 0, 0
    while written < target_bytes:
        ids = pa.array(range(start, start + ROWS_PER_GROUP), pa.int64())
        batch = pa.record_batch(
            {
                "id": ids,
                "amount": pa.compute.multiply(pa.compute.cast(ids, pa.float64()), 0.01),
                "bucket": pa.compute.cast(pa.compute.bit_wise_and(ids, 1023), pa.int32()),
                "label": pa.compute.binary_join_element_wise("item-", pa.compute.cast(ids, pa.string()), ""),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(tmp, batch.schema, compression="zstd")
        writer.write_batch(batch, row_group_size=ROWS_PER_GROUP)
        written += batch.nbytes
        start += ROWS_PER_GROUP
    writer.close()
    tmp.rename(path)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(binary: str, mesh: pathlib.Path, table: str, memory_limit: str) -> dict:
    args = [binary, "serve", "--config", str(mesh), "--bind", "127.0.0.1:0"]
    if memory_limit:
        args += ["--memory-limit", memory_limit]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=dict(os.environ, MESHQL_LOG="warn"))
    try:
        url = server.stdout.readline().split("listening on ", 1)[1].strip()
        with flightsql.connect(url) as conn, conn.cursor() as cur:
            start = time.perf_counter()
            cur.execute(f"SELECT * FROM bench.stream.{table}")
            reader = cur.fetch_record_batch()
            rows = nbytes = 0
            for batch in reader:
                rows += batch.num_rows
                nbytes += batch.nbytes
            seconds = time.perf_counter() - start
        return {
            "table": table,
            "rows": rows,
            "arrow_gb": round(nbytes / 1e9, 3),
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "gb_per_s": round(nbytes / 1e9 / seconds, 3),
            "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=4.0, help="Arrow size of the large table")
    parser.add_argument("--binary", default=os.environ.get("MESHQL_BIN", "target/release/meshql"))
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/meshql/bench/stream"))
    parser.add_argument("--memory-limit", default="1GiB")
    parser.add_argument("--out", default="benches/results/stream_adbc.json")
    args = parser.parse_args()

    data = pathlib.Path(args.data_dir)
    make_table(data / "small.parquet", int(0.25e9))
    make_table(data / f"large-{args.gb}.parquet", int(args.gb * 1e9))
    mesh = data / "mesh.yaml"
    mesh.write_text(
        "version: 1\nsources:\n  local: { kind: local, root: . }\n"
        "domains:\n  bench:\n    products:\n      stream:\n        output_ports:\n"
        "          small: { source: local, format: parquet, path: small.parquet }\n"
        f"          large: {{ source: local, format: parquet, path: large-{args.gb}.parquet }}\n"
    )
    results = [run(args.binary, mesh, t, args.memory_limit) for t in ("small", "large")]
    small, large = results
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "binary": args.binary,
        "memory_limit": args.memory_limit,
        "results": results,
        "result_size_ratio": round(large["arrow_gb"] / small["arrow_gb"], 1),
        "peak_rss_ratio": round(large["server_peak_rss_mb"] / small["server_peak_rss_mb"], 2),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for r in results:
        print(f"{r['table']:>6}: {r['rows']:>11,} rows {r['arrow_gb']:>7.2f} GB in {r['seconds']:>6.2f} s = "
              f"{r['rows_per_s']:>12,} rows/s {r['gb_per_s']:>5.2f} GB/s, server peak RSS {r['server_peak_rss_mb']:>7.1f} MB")
    print(f"result {report['result_size_ratio']}x larger, server peak RSS {report['peak_rss_ratio']}x -> {out}")


if __name__ == "__main__":
    main()
