"""What the benchmark scripts share: free ports, a PostgreSQL cluster in a temp dir,
`meshql serve` processes and peak RSS. Not a benchmark itself."""

import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/meshql/target"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> pathlib.Path:
    """PostgreSQL's server binaries: MESHQL_PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("MESHQL_PG_BIN"):
        return pathlib.Path(os.environ["MESHQL_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise SystemExit("PostgreSQL server binaries not found: apt-get install postgresql postgresql-client "
                         "(or set MESHQL_PG_BIN)")
    return pathlib.Path(found[-1]).parent


def as_postgres(cmd: list) -> list:
    """PostgreSQL refuses to run as root."""
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


class Postgres:
    """A PostgreSQL cluster in a temp dir on loopback (trust auth, user `postgres`)."""

    def __init__(self):
        self.bin = pg_bin()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="meshql-bench-pg-"))
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        self.cluster = self.dir / "cluster"
        subprocess.run(as_postgres([self.bin / "initdb", "-D", self.cluster, "-U", "postgres", "--auth=trust",
                                    "-E", "UTF8", "--locale", "C"]), check=True, stdout=subprocess.DEVNULL)
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB "
                "-c max_parallel_workers_per_gather=2")
        subprocess.run(as_postgres([self.bin / "pg_ctl", "-D", self.cluster, "-o", opts, "-l", self.dir / "log",
                                    "-w", "start"]), check=True, stdout=subprocess.DEVNULL)

    def psql(self, db: str, script: str = None, file: pathlib.Path = None) -> None:
        what = ["-c", script] if script is not None else ["-f", str(file)]
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", "-d", db, *what], check=True, stdout=subprocess.DEVNULL)

    def pid(self) -> int:
        """The postmaster's pid (its children are the backends)."""
        return int((self.cluster / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        subprocess.run(as_postgres([self.bin / "pg_ctl", "-D", self.cluster, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def serve(binary: pathlib.Path, mesh: pathlib.Path, flags: list = (), env: dict = None):
    """Start `meshql serve` on a free loopback port: (process, grpc URL)."""
    proc = subprocess.Popen([binary, "serve", "--config", mesh, "--bind", "127.0.0.1:0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "MESHQL_LOG": "error", **(env or {})})
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.split("listening on ", 1)[1].strip()
    raise SystemExit(f"meshql serve --config {mesh} exited: {proc.wait()}")


def wait_for_port(url: str, seconds: float = 30) -> None:
    host, port = url.split("//")[1].split(":")
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"nothing listens on {url} after {seconds:.0f}s")
            time.sleep(0.1)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
