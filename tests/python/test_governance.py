"""The demo mesh's access rules through ADBC (the notebook path): the same statements
give each user different, correct results; denied ports read as missing; the audit
log (mesh.meta.query_log) has every statement."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pytest

from conftest import PASSWORD


def rows(url, user, sql, params=None):
    with flightsql.connect(url, db_kwargs={"username": user, "password": PASSWORD}) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


CUSTOMER = "SELECT c_custkey, c_phone, c_address FROM customer.profile.customer WHERE c_custkey = ?"


def test_same_statement_different_users(server):
    counts = {u: rows(server, u, "SELECT count(*) FROM customer.profile.customer")[0][0] for u in ("ada", "alice", "bob")}
    # Analysts see European customers only (the row filter), the admin all 1500.
    assert counts["ada"] == 1500
    assert counts["alice"] == counts["bob"] < 1500
    europe = rows(
        server,
        "ada",
        "SELECT count(*) FROM customer.profile.customer c JOIN customer.geo.nation n ON c.c_nationkey = n.n_nationkey "
        "WHERE n.n_regionkey = 3",
    )[0][0]
    assert counts["alice"] == europe

    # Customer 11 lives in the United Kingdom: visible to analysts. Prepared statement
    # with a parameter, as BI tools send it.
    ada = rows(server, "ada", CUSTOMER, (11,))[0]
    alice = rows(server, "alice", CUSTOMER, (11,))[0]
    bob = rows(server, "bob", CUSTOMER, (11,))[0]
    assert alice == (11, None, None)  # pii tag policy: NULL
    assert bob == (11, "***-" + ada[1][-4:], ada[2])  # pii reader: the rule's partial mask
    assert ada[1].count("-") == 3


def test_hidden_rows_never_meet_a_failing_predicate(server):
    # Customer 1 is in Africa: for alice it does not exist, so 1/0 never runs on it.
    sql = "SELECT count(*) FROM customer.profile.customer WHERE c_custkey = 1 AND 1 / (c_custkey - 1) = 0"
    assert rows(server, "alice", sql) == [(0,)]
    with pytest.raises(adbc_driver_manager.Error, match="(?i)divide by zero"):
        rows(server, "ada", sql)


def test_audit_log_holds_every_statement(server):
    marker = "SELECT 'audit me' AS x"
    rows(server, "alice", marker)
    with pytest.raises(adbc_driver_manager.Error, match="not found"):
        rows(server, "alice", "SELECT * FROM customer.profile.nosuch")
    mine = rows(server, "alice", "SELECT statement, decision, rows FROM mesh.meta.query_log WHERE user = 'alice'")
    assert (marker, "allowed", 1) in mine
    assert any(s == "SELECT * FROM customer.profile.nosuch" for s, _, _ in mine)
    # alice sees only her own entries; the admin sees hers too.
    assert rows(server, "alice", "SELECT count(*) FROM mesh.meta.query_log WHERE user <> 'alice'") == [(0,)]
    assert rows(server, "ada", "SELECT count(*) FROM mesh.meta.query_log WHERE statement = ?", (marker,))[0][0] >= 1
