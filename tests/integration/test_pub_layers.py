"""The OGC API's national point layers are built once per load of their source: a national run's 18 region
publications, each of which rebuilt `pub.equipements` (2.9 M rows) and `pub.arrets_transport`, copy them once."""

from __future__ import annotations

import psycopg
import pytest

from qpvhub.ingest.parts import ingest_samples
from qpvhub.publish import publish_region
from tests.integration.test_api import publish_demo

pytestmark = [pytest.mark.postgis, pytest.mark.slow]


def _layer(uri: str) -> tuple[int, str, int, int]:
    with psycopg.connect(uri) as conn:
        return conn.execute(
            "SELECT to_regclass('pub.arrets_transport')::oid::int, b.source_loads, b.rows, "
            "(SELECT count(*) FROM src.gtfs_stops WHERE coalesce(location_type, 0) = 0) "
            "FROM meta.pub_layer_builds b WHERE b.layer = 'arrets_transport'").fetchone()


def test_a_point_layer_is_rebuilt_only_after_a_new_load(env, catalog, regions) -> None:
    publish_demo(env, catalog, regions)
    oid, loads, rows, stops = _layer(env.uri)
    assert rows == stops > 1000  # every stop of both feeds, as the layer holds them
    publish_region(env, regions["53"], threshold=1500)
    assert _layer(env.uri) == (oid, loads, rows, stops)  # no new load: the same table, not a copy
    ingest_samples(env, catalog["gtfs"], force=True)  # each feed's partition swapped in anew
    publish_region(env, regions["53"], threshold=1500)
    new_oid, new_loads, new_rows, new_stops = _layer(env.uri)
    assert new_oid != oid and new_loads != loads and new_rows == new_stops == stops
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM pub.arrets_transport").fetchone()[0] == stops
