"""Fixtures for the Python client tests: a real `meshql serve` on the demo mesh, with
sign-in, started on a port the OS picks. Paths come from the test command
(scripts/test.sh); a missing binary fails loudly instead of skipping."""

import os
import subprocess
import tempfile
import pathlib

import pytest

PASSWORD = "open sesame:42"  # a space and a colon on purpose


def _binary() -> str:
    path = os.environ.get("MESHQL_BIN")
    if not path or not os.path.exists(path):
        raise RuntimeError("MESHQL_BIN must point at a built meshql binary; run scripts/test.sh")
    return path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> pathlib.Path:
    data = tmp_path_factory.mktemp("demo") / "mesh"
    out = subprocess.run([_binary(), "check", "--demo", "--data-dir", str(data)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # The demo mesh has users (ada: admin, alice: analyst, bob: analyst reading pii);
    # their password comes from MESHQL_DEMO_PASSWORD, set by the server fixture.
    assert "access:" in (data / "mesh.yaml").read_text()
    return data


@pytest.fixture(scope="session")
def server(demo_dir):
    env = dict(os.environ, MESHQL_DEMO_PASSWORD=PASSWORD, MESHQL_LOG="warn")
    proc = subprocess.Popen(
        [_binary(), "serve", "--config", str(demo_dir / "mesh.yaml"), "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on grpc://"), f"unexpected first line: {line!r}"
    url = line.split("listening on ", 1)[1].strip()
    yield url
    proc.terminate()
    assert proc.wait(timeout=30) == 0
