"""COPY's binary format (what direct sources are loaded with) stores exactly what the CSV format stores: every
column type the catalogue has an encoder for, NULLs, empty strings, quotes, newlines, non-ASCII text, extreme
numbers, dates before and after 2000-01-01, and points; a value outside the column's range is a clear error."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
import pytest

from qpvhub.catalog.model import COLUMN_TYPES
from qpvhub.ingest import convert, copy
from qpvhub.platform.db import connect
from qpvhub.platform.errors import InputError

pytestmark = pytest.mark.postgis

COLUMNS = {"t": "text", "i": "integer", "s": "smallint", "b": "bigint", "d": "double", "f": "boolean", "day": "date"}


def _frame() -> pd.DataFrame:
    rows = 6
    return pd.DataFrame({
        "t": pd.array(["a", "", None, "é€😀 Saint-Étienne", 'semi;colon "quoted"\nnew line', "2A004"],
                      dtype="string[pyarrow]"),
        "i": pd.array([1, None, -2147483648, 2147483647, 0, 35238], dtype="Int64"),
        "s": pd.array([2024, None, -32768, 32767, 0, 1], dtype="Int64"),
        "b": pd.array([9007199254740993, None, -1, 0, 2**62, 7], dtype="Int64"),
        "d": pd.array([1.5, None, -0.0, 1e300, 2.5e-300, 43.6], dtype="Float64"),
        "f": [True, False, None, True, False, None],
        "day": [dt.date(2024, 2, 29), dt.date(1999, 12, 31), None, dt.date(2000, 1, 1), dt.date(1970, 1, 1),
                dt.date(2100, 6, 30)],
        "source_run_id": ["run_1"] * rows,
        "__x": pd.array([351000.5, 352000.25, 353000.0, 354000.0, 355000.0, 356000.0], dtype="Float64"),
        "__y": pd.array([6789000.5, 6790000.0, 6791000.0, 6792000.0, 6793000.0, 6794000.0], dtype="Float64"),
    })


def _table(conn: psycopg.Connection, name: str) -> None:
    cols = ", ".join(f"{c} {COLUMN_TYPES[t]}" for c, t in COLUMNS.items())
    conn.execute(f"DROP TABLE IF EXISTS staging.{name}")
    conn.execute(f"CREATE TABLE staging.{name} ({cols}, source_run_id text, geom geometry(Point, 2154))")


def test_binary_and_csv_copies_store_the_same_rows(env, catalog) -> None:
    bpe = catalog["bpe"]
    names = [*COLUMNS, "source_run_id", "geom"]
    kinds = [*COLUMNS.values(), "text", "geometry"]
    with connect(env.uri) as conn:  # as the loader, like the COPY workers
        _table(conn, "copy_csv")
        _table(conn, "copy_bin")
        conn.commit()
    as_hex, _ = convert.points_from_xy(_frame(), bpe, 2154)
    as_bytes, _ = convert.points_from_xy(_frame(), bpe, 2154, raw=True)
    assert copy.copy_batches_parallel(env.uri, "copy_csv", names, [as_hex]) == 6
    assert copy.copy_batches_parallel(env.uri, "copy_bin", names, [as_bytes, as_bytes.iloc[:0]], kinds=kinds) == 6
    with psycopg.connect(env.uri) as conn:
        def rows(table: str) -> list[tuple]:
            return conn.execute(f"SELECT {', '.join(COLUMNS)}, source_run_id, ST_AsEWKT(geom) FROM staging.{table} "
                                "ORDER BY i NULLS FIRST, t").fetchall()
        binary, csv = rows("copy_bin"), rows("copy_csv")
        assert binary == csv
        assert ("", None, None, None, None, False, dt.date(1999, 12, 31), "run_1",
                "SRID=2154;POINT(352000.25 6790000)") in binary
        assert conn.execute("SELECT count(*) FROM staging.copy_bin WHERE t = ''").fetchone() == (1,)  # '' is not NULL
        assert conn.execute("SELECT count(*) FROM staging.copy_bin WHERE t IS NULL").fetchone() == (1,)


def test_a_value_outside_the_column_type_is_a_clear_error(catalog) -> None:
    """Caught where the row is still known (source, file, line, column), before either COPY format; the
    binary encoder refuses it too, naming the column."""
    bpe = catalog["bpe"]
    batch = pd.DataFrame({"DEPCOM": ["35238", "35238"], "DCIRIS": ["352380101", None], "DEP": ["35", "35"],
                          "AN": ["2024", "99999999999"], "TYPEQU": ["A101", "A101"], "QUALITE_XY": ["A", "A"],
                          "EPSG": ["2154", "2154"], "LAMBERT_X": ["351000", "351000"],
                          "LAMBERT_Y": ["6789000", "6789000"], "__feature": [2, 3]}, dtype="string[pyarrow]")
    batch["__feature"] = [2, 3]
    with pytest.raises(InputError, match=r"out of range for integer: '99999999999'") as err:
        convert.convert_batch(batch, bpe, "BPE25.csv", "run_1")
    assert "bpe" in str(err.value) and "BPE25.csv" in str(err.value) and "AN" in str(err.value), err.value
    frame = _frame().assign(i=pd.array([2**40, 1, 2, 3, 4, 5], dtype="Int64"))
    with pytest.raises(InputError, match=r"column i: a value does not fit PostgreSQL's integer"):
        copy._binary_bytes(frame, ["i"], ["integer"])


def test_numeric_columns_keep_the_csv_format(catalog) -> None:
    bpe = catalog["bpe"]
    names = [*bpe.columns, "source_run_id", "geom"]
    assert copy.binary_kinds(bpe, names) == ["text", "text", "text", "integer", "text", "text", "text", "integer",
                                             "text", "text", "text", "geometry"]
    numeric = bpe.model_copy(update={"columns": {**bpe.columns, "annee": bpe.columns["annee"].model_copy(
        update={"type": "numeric"})}})
    assert copy.binary_kinds(numeric, names) is None
    assert np.dtype(convert.EWKB_POINT).itemsize == 25


def test_the_rejected_rows_of_a_batch_do_not_keep_the_batch_alive(catalog) -> None:
    """stage_file keeps each batch's rejected rows to the end of the file: they must own their (usually empty)
    arrays, not be a view of the batch (a 5M-row load once held every batch so: peak RSS 655 → 1134 MB)."""
    import gc

    import pyarrow as pa

    bpe = catalog["bpe"]
    n = 200_000
    before = pa.total_allocated_bytes()
    batch = pd.DataFrame({"insee_com": pd.array(["35238"] * n, dtype="string[pyarrow]"),
                          "__x": pd.array(np.full(n, 351000.0), dtype="Float64"),
                          "__y": pd.array(np.full(n, 6789000.0), dtype="Float64")})
    kept, rejected = convert.points_from_xy(batch, bpe, 2154, raw=True)
    assert len(kept) == n and rejected.empty
    held = pa.total_allocated_bytes() - before
    assert held > n * 25  # the batch's text and the kept rows' points are Arrow memory
    del batch, kept
    gc.collect()
    assert pa.total_allocated_bytes() - before < held / 10, "the rejected frame still holds the batch"
