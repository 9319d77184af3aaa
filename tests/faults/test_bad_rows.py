"""Bad rows in an otherwise good file (bad files are in tests/integration/test_bad_inputs.py): a 10 MB
single line, coordinates outside France, duplicated keys. Each is built from a real bundled file; each
fails clearly and leaves the previous load in place."""

from __future__ import annotations

import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import InputError, ValidationFailed
from tests.conftest import COG_SAMPLE, bpe_sample_text

pytestmark = [pytest.mark.postgis, pytest.mark.faults]


def _fingerprint(uri: str, table: str) -> str:
    with psycopg.connect(uri) as conn:
        return conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t").fetchone()[0]


@pytest.fixture
def cog_loaded(env, catalog, http_source) -> str:
    assert ingest(env, catalog["cog_communes"], url=http_source.put("good.csv", COG_SAMPLE.read_bytes())).status \
        == "success"
    return _fingerprint(env.uri, "ref.commune")


def test_ten_megabyte_single_line_is_refused_naming_the_line(env, catalog, http_source, cog_loaded) -> None:
    lines = COG_SAMPLE.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b'"COM",', b'"' + b"x" * 10_000_000 + b'",', 1)
    with pytest.raises(InputError, match=r"source cog_communes, file long.csv, line 6: .*(too long|1 MB|block)"):
        ingest(env, catalog["cog_communes"], url=http_source.put("long.csv", b"".join(lines)))
    assert _fingerprint(env.uri, "ref.commune") == cog_loaded


def test_duplicated_keys_block_naming_the_key(env, catalog, http_source, cog_loaded) -> None:
    lines = COG_SAMPLE.read_bytes().splitlines(keepends=True)
    dup = b"".join([*lines, lines[1]])
    with pytest.raises(ValidationFailed, match=r"(?s)expect_column_values_to_be_unique on 'insee_com'.*"
                                               + lines[1].split(b",")[1].decode().strip('"')):
        ingest(env, catalog["cog_communes"], url=http_source.put("dup.csv", dup))
    assert _fingerprint(env.uri, "ref.commune") == cog_loaded


def test_points_outside_france_block(env, catalog, http_source) -> None:
    assert ingest(env, catalog["bpe"], sample=True).status == "success"
    before = _fingerprint(env.uri, "src.bpe")
    lines = bpe_sample_text().splitlines(keepends=True)
    head = lines[0].rstrip("\n").split(";")
    ix, iy = head.index("LAMBERT_X"), head.index("LAMBERT_Y")
    cells = lines[3].rstrip("\n").split(";")
    cells[ix], cells[iy] = "3500000", "1200000"  # valid numbers, in the Atlantic far off Lambert-93's France
    lines[3] = ";".join(cells) + "\n"
    with pytest.raises(ValidationFailed, match=r"(?s)source bpe: validation failed.*every geometry inside the "
                                               r"bounding box of the deployment's regions.*POINT\(-?\d"):
        ingest(env, catalog["bpe"], url=http_source.put("bpe.csv", "".join(lines).encode()))
    assert _fingerprint(env.uri, "src.bpe") == before
