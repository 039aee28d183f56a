#!/usr/bin/env bash
# Builds meshql and runs a cross-domain query on the embedded demo mesh (generated on
# first use into ~/.cache/meshql/demo). Pass your own SQL as the first argument.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SQL="${1:-SELECT r.r_name AS region, count(*) AS orders, sum(o.o_totalprice) AS revenue
FROM sales.orders.orders o
JOIN customer.profile.customer c ON o.o_custkey = c.c_custkey
JOIN customer.geo.nation n ON c.c_nationkey = n.n_nationkey
JOIN customer.geo.region r ON n.n_regionkey = r.r_regionkey
GROUP BY r.r_name ORDER BY revenue DESC}"
# Same targets as the test command, so both share one build of the dependencies.
$LINK cargo build --quiet --workspace --all-targets
"$CARGO_TARGET_DIR/debug/meshql" query --demo --user ada "$SQL"
