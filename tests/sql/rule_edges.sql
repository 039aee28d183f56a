-- The edges of meshql's optimizer rules, over the TPC-H tables (qualified by the test):
-- nulls, empty inputs, sliced arrays, dictionary and view strings, decimals near their
-- precision limits, LIKE patterns with escapes and wildcards, joins on duplicate keys,
-- aggregates below joins, CTEs read twice under LIMIT, conditions that fail on some rows.
-- tests/integration/rule_matrix.rs runs each with every rule on, with each rule off and
-- with all off, and compares the outcomes (rows, or that it failed). One statement a line.
SELECT count(*), sum(l_extendedprice * (1 - l_discount)) FROM lineitem WHERE l_shipdate > DATE '1995-01-01' AND l_comment LIKE '%furiously%regular%';
SELECT l_returnflag, sum(l_extendedprice * l_quantity), sum(l_extendedprice + l_tax), sum(l_extendedprice - l_discount), sum(l_quantity * l_discount * l_tax) FROM lineitem GROUP BY l_returnflag ORDER BY 1;
SELECT sum(CAST(l_extendedprice AS DECIMAL(38, 2)) * CAST(l_quantity AS DECIMAL(38, 2))), sum(CAST(l_extendedprice AS DECIMAL(38, 10)) - CAST(l_tax AS DECIMAL(38, 10))) FROM lineitem;
SELECT CAST(l_extendedprice AS DECIMAL(38, 0)) * CAST(99999999999999999999 AS DECIMAL(38, 0)) FROM lineitem WHERE l_orderkey < 10;
SELECT CAST(l_extendedprice AS DECIMAL(18, 2)) * CAST(l_extendedprice AS DECIMAL(18, 2)) * CAST(l_extendedprice AS DECIMAL(18, 2)) FROM lineitem WHERE l_orderkey < 40 ORDER BY 1 LIMIT 20;
SELECT CAST(9999999999999999.99 AS DECIMAL(18, 2)) + CAST(l_extendedprice AS DECIMAL(18, 2)) FROM lineitem WHERE l_orderkey = 1;
SELECT min(l_extendedprice * -1), max(l_extendedprice - 99999999999.99), min(l_discount - l_tax), max(-l_quantity * l_discount) FROM lineitem;
SELECT sum(CASE WHEN l_linenumber = 2 THEN NULL ELSE l_extendedprice END * l_discount), count(CASE WHEN l_linenumber = 3 THEN NULL ELSE l_tax END + l_discount) FROM lineitem;
SELECT count(*) FROM lineitem WHERE l_comment LIKE '%a\%b%';
SELECT count(*) FROM lineitem WHERE l_comment LIKE 'ca\_%' OR l_comment LIKE '%\_%';
SELECT count(*) FROM lineitem WHERE l_comment LIKE '%' AND l_comment LIKE '%%' AND l_comment NOT LIKE '';
SELECT count(*) FROM lineitem WHERE l_comment LIKE '%the%' AND l_comment NOT LIKE '%the%quick%' AND l_comment LIKE '_%s';
SELECT count(*) FROM lineitem WHERE l_comment ILIKE '%THE%ACCOUNTS%' OR l_comment LIKE 'bold%deposits%';
SELECT count(*) FROM lineitem WHERE l_comment LIKE '%é%' OR l_comment LIKE '%ly%ly%ly%';
SELECT count(*) FROM lineitem WHERE l_comment LIKE 'fluffily%' AND l_comment LIKE '%fluffily';
SELECT count(*) FROM lineitem WHERE l_comment LIKE '%carefully%' ESCAPE '#';
SELECT l_shipmode, count(*) FROM lineitem WHERE l_shipmode LIKE '%AI%' OR l_shipmode LIKE 'T%CK' GROUP BY l_shipmode ORDER BY 1;
SELECT count(*) FROM (SELECT CASE WHEN l_linenumber = 1 THEN NULL ELSE l_comment END AS c FROM lineitem) WHERE c LIKE '%ly%re%';
SELECT count(*) FROM (SELECT arrow_cast(l_shipmode, 'Dictionary(Int32, Utf8)') AS m, l_quantity FROM lineitem) WHERE m LIKE '%AI%' AND l_quantity > 10;
SELECT count(*) FROM (SELECT arrow_cast(l_comment, 'Utf8View') AS c FROM lineitem) WHERE c LIKE '%carefully%final%' AND c <> 'x';
SELECT count(*) FROM (SELECT arrow_cast(l_comment, 'LargeUtf8') AS c FROM lineitem) WHERE c LIKE '%pending%deposits%';
SELECT count(*), min(l_comment) FROM (SELECT l_comment FROM lineitem ORDER BY l_orderkey, l_linenumber LIMIT 1000 OFFSET 777) WHERE l_comment LIKE '%deposits%';
SELECT count(*), sum(l_extendedprice * l_discount) FROM (SELECT * FROM lineitem ORDER BY l_orderkey, l_linenumber LIMIT 333 OFFSET 4095) WHERE l_quantity > 5 AND l_comment LIKE '%s%';
SELECT count(*) FROM lineitem WHERE l_quantity < 0 AND l_comment LIKE '%x%y%';
SELECT sum(l_extendedprice * l_discount), count(*) FROM lineitem WHERE l_shipdate > DATE '2100-01-01';
SELECT count(*) FROM lineitem WHERE l_shipdate BETWEEN DATE '1994-01-01' AND DATE '1994-12-31' AND l_shipmode IN ('AIR', 'MAIL') AND l_comment NOT LIKE '%special%' AND l_discount > 0.05;
SELECT count(*) FROM lineitem WHERE l_comment < l_shipinstruct AND l_quantity * 2 > l_linenumber AND l_shipdate < l_commitdate;
SELECT count(*) FROM lineitem WHERE l_linenumber > 1 AND 100 / (l_linenumber - 1) > 10;
SELECT count(*) FROM lineitem WHERE l_comment LIKE '%a%' AND 100 / (l_linenumber - 1) > 10;
SELECT count(*) FROM lineitem WHERE l_quantity > 49 AND CAST(l_comment AS INT) > 0;
SELECT count(*), sum(o.o_totalprice) FROM orders o JOIN lineitem l ON o.o_orderkey = l.l_orderkey JOIN lineitem l2 ON l2.l_orderkey = o.o_orderkey WHERE o.o_orderdate < DATE '1992-03-01';
SELECT count(*) FROM partsupp a JOIN partsupp b ON a.ps_partkey = b.ps_partkey AND a.ps_suppkey <> b.ps_suppkey WHERE a.ps_availqty < 100;
SELECT p_partkey, round(avg_q, 6) FROM part JOIN (SELECT l_partkey, avg(l_quantity) AS avg_q FROM lineitem GROUP BY l_partkey) a ON a.l_partkey = p_partkey WHERE p_brand = 'Brand#23' AND p_container = 'MED BOX' ORDER BY 1;
SELECT count(*) FROM partsupp ps JOIN (SELECT ps_partkey AS k, min(ps_supplycost) AS m FROM partsupp GROUP BY ps_partkey) x ON ps.ps_partkey = x.k AND ps.ps_supplycost = x.m;
SELECT count(*) FROM lineitem l JOIN (SELECT l_partkey AS k, min(CASE WHEN l_quantity > 10 THEN l_quantity END) AS m FROM lineitem GROUP BY l_partkey) x ON l.l_partkey = x.k AND l.l_quantity = x.m;
SELECT count(*) FROM lineitem l JOIN (SELECT l_partkey AS k, max(l_quantity) AS m FROM lineitem WHERE l_quantity > 1000 GROUP BY l_partkey) x ON l.l_partkey = x.k;
SELECT count(*) FROM orders o JOIN (SELECT l_orderkey AS k, max(l_shipdate) AS last FROM lineitem GROUP BY l_orderkey) x ON o.o_orderkey = x.k AND o.o_orderdate < x.last - INTERVAL '100' DAY;
SELECT count(*) FROM customer c LEFT JOIN (SELECT o_custkey, count(*) AS n FROM orders GROUP BY o_custkey) x ON c.c_custkey = x.o_custkey WHERE x.n IS NULL;
WITH c AS (SELECT l_orderkey, sum(l_quantity) AS q FROM lineitem GROUP BY l_orderkey) SELECT a.l_orderkey, b.q FROM (SELECT * FROM c ORDER BY l_orderkey LIMIT 5) a JOIN c b ON a.l_orderkey = b.l_orderkey ORDER BY 1;
WITH c AS (SELECT l_orderkey, sum(l_quantity) AS q FROM lineitem WHERE l_quantity > 1000 GROUP BY l_orderkey) SELECT count(*) FROM c a JOIN c b ON a.l_orderkey = b.l_orderkey;
WITH c AS (SELECT o_custkey, o_orderpriority FROM orders WHERE o_comment LIKE '%special%requests%') SELECT count(*) FROM c a JOIN c b ON a.o_custkey = b.o_custkey AND a.o_orderpriority < b.o_orderpriority;
SELECT count(*) FROM orders WHERE o_comment NOT LIKE '%special%requests%' AND o_orderkey IN (SELECT l_orderkey FROM lineitem WHERE l_comment LIKE '%quickly%');
SELECT n_name, count(*) FROM nation LEFT JOIN supplier ON s_nationkey = n_nationkey AND s_comment LIKE '%Customer%Complaints%' GROUP BY n_name ORDER BY 1;
