"""meshql through plain pyarrow.flight: Basic sign-in for a bearer token, then a Flight SQL
command (packed by hand, as any Flight client can) and DoGet."""

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flightsql import flightsql_pb2
from google.protobuf import any_pb2

from conftest import PASSWORD


def command(query: str) -> flight.FlightDescriptor:
    packed = any_pb2.Any()
    packed.Pack(flightsql_pb2.CommandStatementQuery(query=query))
    return flight.FlightDescriptor.for_command(packed.SerializeToString())


def test_basic_token_then_query(server):
    client = flight.FlightClient(server)
    header = client.authenticate_basic_token("ada", PASSWORD)
    options = flight.FlightCallOptions(headers=[header])
    assert header[1].startswith(b"Bearer ")

    info = client.get_flight_info(command("SELECT r_regionkey, r_name FROM customer.geo.region ORDER BY 1"), options)
    assert len(info.endpoints) == 1
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.schema == info.schema
    assert table.schema.field("r_name").type == pa.string()
    assert table.column("r_name").to_pylist() == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]


def test_no_token_is_unauthenticated(server):
    client = flight.FlightClient(server)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(command("SELECT 1"))
