"""The OGC API against its own filter: the review's requests replayed, the database role's bounds, a server that
comes back after dying, and a bounded fuzz run of CQL2 filters (no 500, no process death)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import psycopg
import pytest
import shapely.geometry

from tests.conftest import as_role
from tests.integration.test_api import healthy, publish_demo, serving

pytestmark = [pytest.mark.postgis, pytest.mark.slow]
ITEMS = "/collections/pub.qpv_profil_53/items"


def _call(base: str, path: str, **params: str) -> tuple[int, dict | str]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


REVIEWED = [  # the review's requests, each answered 400 with the rule, never with PostgreSQL's words
    {"filter": "int4(version()) = 1"},
    {"filter": "int4(concat(query_to_xml('select string_agg(rolname, '','') from pg_roles', true, true, ''))) = 1"},
    {"filter": "int4(concat(query_to_xml('select relname, n_live_tup from pg_stat_user_tables', true, true, "
               "''))) = 1"},
    {"filter": "pg_sleep(2) IS NULL"},
    {"filter": "(" * 3000 + "population > 1" + ")" * 3000},
    {"offset": "99999999999999999999"},
    {"limit": "-1"},
    {"filter": "no_such_column = 1"},
    {"sortby": "no_such_column"},
    {"properties": "lib_qp,no_such_column"},
    {"bbox": "1,2,three,4"},
    {"filter": "lib_qp = 'x' AND", "filter-lang": "cql2-text"},
]


def test_the_reviewed_requests_are_refused_and_the_server_stays_up(env, catalog, regions) -> None:
    publish_demo(env, catalog, regions)
    with serving(env) as (base, _proc):
        for params in REVIEWED:
            status, body = _call(base, ITEMS, **params)
            assert status == 400, (params, status, body)
            text = json.dumps(body, ensure_ascii=False)
            assert body["code"] == "InvalidParameterValue" and body["description"], params
            for leak in ("PostgreSQL", "postgres", "asyncpg", "qpvhub_loader", "n_live_tup", "ERROR", "Traceback"):
                assert leak not in text.replace("query_to_xml", ""), (params, text)
        assert "int4" in _call(base, ITEMS, filter="int4(version()) = 1")[1]["description"]
        assert healthy(base, attempts=4)  # 3,000 parentheses killed the server before: it is still here
        # what the filter is for still works: comparisons, logic, spatial predicates on the collection's columns
        status, page = _call(base, ITEMS, filter="code_qp = 'QP035002' OR lib_qp LIKE 'Mau%'", limit="10")
        assert status == 200 and {f["properties"]["code_qp"] for f in page["features"]} == {"QP035002", "QP035004"}
        villejean = _call(base, ITEMS, filter="code_qp = 'QP035002'")[1]["features"][0]["geometry"]
        inside = shapely.geometry.shape(villejean).representative_point()
        status, page = _call(base, ITEMS, filter=f"S_INTERSECTS(geom, POINT({inside.x} {inside.y}))")
        assert status == 200 and [f["properties"]["code_qp"] for f in page["features"]] == ["QP035002"]
        status, page = _call(base, ITEMS, filter=json.dumps({"op": ">", "args": [{"property": "superficie_ha"}, 40]}),
                             **{"filter-lang": "cql2-json"})
        assert status == 200 and page["numberMatched"] >= 1


def test_the_api_role_is_bounded_in_the_database(db_uri: str) -> None:
    with psycopg.connect(as_role(db_uri, "qpvhub_api"), autocommit=True) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT relname, n_live_tup FROM pg_stat_user_tables")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(6)")
    with psycopg.connect(db_uri) as conn:
        assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'qpvhub_api'").fetchone() == (20,)
    with psycopg.connect(as_role(db_uri, "qpvhub_analyst")) as conn:  # the analysts keep their statistics
        conn.execute("SELECT count(*) FROM pg_stat_user_tables").fetchone()


def test_a_dead_server_is_restarted(env, catalog, regions) -> None:
    publish_demo(env, catalog, regions)
    with serving(env) as (base, proc):
        child = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                                   check=True).stdout.split()[0])
        os.kill(child, signal.SIGKILL)  # what a crash of the server process looks like to its supervisor
        assert healthy(base), "the supervisor did not start the server again"
        again = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert again and int(again[0]) != child


ATOMS = ["code_qp", "lib_qp", "population", "superficie_ha", "geom", "dep", "'QP035002'", "'%'", "1", "-3.5",
         "1e308", "NULL", "TRUE", "version()", "pg_sleep(1)", "now()", "upper(lib_qp)", "casei(lib_qp)",
         "POINT(-1.7 48.1)", "BBOX(-2,47,-1,49)", "'x''y'", "''", "\"lib_qp\"", "@", "$1", ";--", "/*"]
OPS = ["=", "<>", "<", "<=", ">", ">=", "LIKE", "IS NULL", "IS NOT NULL", "IN", "BETWEEN", "AND", "OR", "NOT",
       "S_INTERSECTS", "S_WITHIN", "+", "||", "::text", "(", ")", ",", "[", "]", "{", "}"]


def _filter(rng: random.Random) -> str:
    """A filter from CQL2's pieces and hostile ones, often well-formed, often not; sometimes deeply nested."""
    shape = rng.random()
    if shape < 0.4:
        a, b = rng.choice(ATOMS), rng.choice(ATOMS)
        text = f"{a} {rng.choice(OPS[:7])} {b}"
        for _ in range(rng.randint(0, 3)):
            text = f"({text}) {rng.choice(['AND', 'OR'])} {rng.choice(ATOMS)} {rng.choice(OPS[:6])} {rng.choice(ATOMS)}"
        return text
    if shape < 0.5:
        return "(" * rng.choice([19, 20, 21, 500]) + "population > 1" + ")" * rng.choice([19, 20, 21, 500])
    if shape < 0.6:
        return f"{rng.choice(['S_INTERSECTS', 'S_WITHIN', 'S_CONTAINS'])}({rng.choice(ATOMS)}, {rng.choice(ATOMS)})"
    return " ".join(rng.choice(ATOMS + OPS) for _ in range(rng.randint(1, 12)))


def test_fuzzing_the_filter_gives_no_server_error(env, catalog, regions) -> None:
    """300 generated filters (fixed seed: the same run each time, within CI's budget), in text and JSON."""
    publish_demo(env, catalog, regions)
    rng = random.Random(20261205)
    with serving(env) as (base, _proc):
        seen = {}
        for n in range(300):
            text = _filter(rng)
            params = {"filter": text, "limit": "5"}
            if n % 10 == 0:  # a JSON filter, valid or mangled
                params = {"filter": json.dumps({"op": rng.choice(["=", "int4", "and", "pg_sleep", "like"]),
                                                "args": [{"property": rng.choice(["lib_qp", "x"])}, text[:30]]}),
                          "filter-lang": "cql2-json"}
            status, body = _call(base, ITEMS, **params)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, (params, status, body)
        assert healthy(base, attempts=4)
    assert seen.get(400, 0) > 50 and seen.get(200, 0) > 10, seen  # both refusals and answers were exercised
