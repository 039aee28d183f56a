"""The example notebook (examples/mesh_tour.ipynb) runs headless against a real server
and produces its table and its chart."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

from conftest import PASSWORD

NOTEBOOK = pathlib.Path(__file__).parents[2] / "examples" / "mesh_tour.ipynb"


def test_example_notebook_runs_headless(server, monkeypatch):
    monkeypatch.setenv("MESHQL_URL", server)
    monkeypatch.setenv("MESHQL_USER", "ada")
    monkeypatch.setenv("MESHQL_PASSWORD", PASSWORD)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "sales.orders.lineitem" in html, "the port listing is shown"
    assert "AFRICA" in html, "the joined regions are shown"
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chart is drawn"
