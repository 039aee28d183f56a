"""The REPL driven through a pseudo-terminal, as a person types into it."""

import os
import tempfile

import pexpect
import pytest

from conftest import PASSWORD, _binary

PROMPT = "meshql> "


def spawn(args, env=None):
    child = pexpect.spawn(
        _binary(),
        ["repl", *args],
        env=dict(os.environ, MESHQL_LOG="error", XDG_STATE_HOME=tempfile.mkdtemp(prefix="meshql-repl-"), **(env or {})),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    child.expect_exact(PROMPT)
    return child


@pytest.fixture
def embedded(demo_dir):
    child = spawn(["--config", str(demo_dir / "mesh.yaml"), "--user", "ada"], env={"MESHQL_DEMO_PASSWORD": PASSWORD})
    yield child
    child.sendline("\\q")
    child.expect(pexpect.EOF)


def test_discover_and_join_without_docs(embedded):
    child = embedded
    child.sendline("\\d")
    child.expect_exact("sales.orders.lineitem")
    child.expect_exact("One row per order line")
    child.expect_exact(PROMPT)

    child.sendline("\\d customer.profile.customer")
    child.expect_exact("c_phone")
    child.expect_exact("Phone number")
    child.expect_exact(PROMPT)

    # A statement over several lines, finished by `;`.
    child.sendline("SELECT r.r_name, count(*) AS orders FROM sales.orders.orders o")
    child.sendline("JOIN customer.profile.customer c ON o.o_custkey = c.c_custkey")
    child.sendline("JOIN customer.geo.nation n ON c.c_nationkey = n.n_nationkey")
    child.sendline("JOIN customer.geo.region r ON n.n_regionkey = r.r_regionkey GROUP BY r.r_name ORDER BY r.r_name;")
    child.expect_exact("MIDDLE EAST")
    child.expect_exact("5 rows")
    child.expect_exact(PROMPT)


def test_completion_of_names(embedded):
    child = embedded
    child.send("SELECT count(*) FROM customer.geo.nat\t")
    child.expect_exact("customer.geo.nation")
    child.sendline(";")
    child.expect_exact("25")
    child.expect_exact(PROMPT)


def test_long_results_are_cut_with_a_note_and_errors_are_one_line(embedded):
    child = embedded
    child.sendline("SELECT o_orderkey, o_comment FROM sales.orders.orders;")
    child.expect_exact("15000 rows (showing the first 40; \\format csv prints all)")
    child.expect_exact(PROMPT)
    child.sendline("SELECT * FROM sales.orders.nope;")
    child.expect(r"error: [^\r\n]*sales\.orders\.nope[^\r\n]*\r\n")
    child.expect_exact(PROMPT)
    child.sendline("\\format csv")
    child.expect_exact(PROMPT)
    child.sendline("SELECT r_name FROM customer.geo.region ORDER BY r_regionkey LIMIT 2;")
    child.expect_exact("r_name\r\nAFRICA\r\nAMERICA")
    child.expect_exact(PROMPT)


def test_ctrl_c_cancels_the_query_and_keeps_the_shell(embedded):
    child = embedded
    # A cross join large enough to run for a long time.
    child.sendline("SELECT count(*) FROM sales.orders.lineitem a, sales.orders.lineitem b WHERE a.l_comment < b.l_comment;")
    child.expect(r"\d+\.\d s, \d+ rows")  # the spinner
    child.sendintr()
    child.expect_exact("cancelled")
    child.expect_exact(PROMPT)
    child.sendline("SELECT 1 + 1 AS two;")
    child.expect_exact("two")
    child.expect_exact(PROMPT)


def test_connect_to_a_server_with_sign_in(server):
    child = spawn(["--connect", server, "--user", "ada"], env={"MESHQL_PASSWORD": PASSWORD})
    child.sendline("\\dt customer.%")
    child.expect_exact("customer.profile.customer")
    child.expect_exact(PROMPT)
    child.sendline("\\q")
    child.expect(pexpect.EOF)
