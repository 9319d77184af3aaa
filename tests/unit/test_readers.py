"""Readers on the real bundled files, and the bad inputs every reader refuses clearly."""

from pathlib import Path

import pandas as pd
import pytest

from qpvhub.ingest.readers import get_reader
from qpvhub.platform.errors import InputError
from tests.conftest import BPE_SAMPLE, COG_SAMPLE, QPV_SAMPLE


def test_registry_names_known_formats() -> None:
    assert get_reader("geojson").format == "geojson"
    assert get_reader("xlsx").format == "xlsx"
    with pytest.raises(KeyError, match="no reader for format 'ods'; known: csv, geojson"):
        get_reader("ods")


def test_geojson_real_qpv_file_streams_features_with_wkb_and_crs() -> None:
    r = get_reader("geojson")(QPV_SAMPLE, "qpv_2015", batch_size=4)
    info = r.open()
    assert info.crs == "EPSG:4326"  # the legacy CRS84 `crs` member
    assert info.columns == ["CODE_QP", "NOM_QP", "COMMUNE_QP", "surface", "pop", "demandeurs"]
    batches = list(r.batches())
    assert [len(b) for b in batches] == [4, 2]  # streamed in batches
    df = pd.concat(batches)
    assert sorted(df["CODE_QP"]) == [f"QP03500{i}" for i in range(1, 7)]
    assert list(df["__feature"]) == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(w, bytes) and len(w) > 100 for w in df["__wkb"])
    assert df.loc[df["CODE_QP"] == "QP035004", "pop"].item() == "6 206"  # kept as text


def test_csv_real_cog_file_keeps_codes_as_text() -> None:
    r = get_reader("csv")(COG_SAMPLE, "cog_communes", {"sep": ","}, batch_size=1000)
    info = r.open()
    assert info.columns[:4] == ["TYPECOM", "COM", "REG", "DEP"]
    df = pd.concat(r.batches())
    assert len(df) == 2893
    assert df["COM"].str.fullmatch(r"\d{5}").all()
    assert df.loc[(df["COM"] == "22001") & (df["TYPECOM"] == "COM"), "ARR"].item() == "224"  # text, not 224.0
    # data line numbers: the header is line 1
    assert df["__feature"].iloc[0] == 2 and df["__feature"].iloc[-1] == 2894


def test_csv_blocks_are_joined_into_batches_without_losing_or_renumbering_a_row(monkeypatch) -> None:
    """Arrow parses small blocks; the reader joins consecutive ones into batches of `batch_size` rows or more:
    the rows, their order and their line numbers are those of a single-block read."""
    whole = pd.concat(get_reader("csv")(COG_SAMPLE, "cog_communes", {"sep": ","}).batches())
    reader = get_reader("csv")(COG_SAMPLE, "cog_communes", {"sep": ","}, batch_size=1000)
    monkeypatch.setattr(reader, "block_size", 16 << 10)  # ~170 rows per block
    batches = list(reader.batches())
    assert len(batches) == 3 and all(len(b) >= 1000 for b in batches[:-1]), [len(b) for b in batches]
    assert all(len(b) < 1000 + 400 for b in batches)  # no more than a block beyond batch_size
    joined = pd.concat(batches, ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole.reset_index(drop=True))
    assert list(joined["__feature"]) == list(range(2, 2895))


def test_zipped_bpe_reads_its_member_in_cp1252_and_only_the_columns_kept(tmp_path: Path) -> None:
    """INSEE's BPE25.zip layout: the member named by reader.member, 95 columns in the header;
    keep_only converts the ten the entry reads (the others are never parsed), in file order."""
    sample = tmp_path / BPE_SAMPLE.name  # readers extract an archive next to it: not inside include/
    sample.write_bytes(BPE_SAMPLE.read_bytes())
    r = get_reader("csv")(sample, "bpe", {"sep": ";", "member": "BPE25.csv"})
    info = r.open()
    assert len(info.columns) == 95 and info.columns[17] == "DEPCOM"
    r.keep_only(["TYPEQU", "DEPCOM", "LAMBERT_X", "LAMBERT_Y", "EPSG"])
    df = pd.concat(list(r.batches()))
    assert [c for c in df.columns if not c.startswith("__")] == ["DEPCOM", "LAMBERT_X", "LAMBERT_Y", "EPSG", "TYPEQU"]
    assert len(df) == 121 and df["DEPCOM"].iloc[0] == "35288" and df["__feature"].iloc[-1] == 122
    assert set(df["TYPEQU"].str[0]) <= set("ABCDEFG") and set(df["EPSG"]) == {"2154"}


def test_a_record_longer_than_the_parse_block_names_the_option_that_reads_it(tmp_path: Path) -> None:
    """A CSV whose one field (a WKT outline, say) outgrows Arrow's 1 MB block: a clear error naming the file,
    the place and `reader.block_size`; with that option the same file reads whole."""
    p = tmp_path / "contours.csv"
    outline = "MULTIPOLYGON(((" + ",".join(f"{351000 + i} {6789000 + i}" for i in range(250_000)) + ")))"
    p.write_text(f"code;wkt\nQN03500101;x\nQN03500102;{outline}\nQN03500103;y\n", encoding="utf-8")
    assert p.stat().st_size > 3 << 20  # Arrow takes a record over two blocks, not three
    with pytest.raises(InputError, match=r"longer than the parser's block of 1048576 bytes: set reader.block_size"
                       ) as err:
        list(get_reader("csv")(p, "contours", {"sep": ";"}).batches())
    assert "contours.csv" in str(err.value) and "line 3" in str(err.value), err.value  # the long record
    df = pd.concat(get_reader("csv")(p, "contours", {"sep": ";", "block_size": 4 << 20}).batches())
    assert list(df["code"]) == ["QN03500101", "QN03500102", "QN03500103"] and len(df["wkt"].iloc[1]) == len(outline)


def test_csv_separator_and_encoding_are_sniffed(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_bytes("CODGEO;LIBGEO;POP\r\nQP02A001;Les Jardins de l'Empereur;2 345\r\n".encode("cp1252"))
    r = get_reader("csv")(p, "t")
    info = r.open()
    assert info.extra == {"encoding": "utf-8", "sep": ";"}  # ASCII-only: valid UTF-8
    p.write_bytes("CODGEO;LIBGEO\r\nQP035001;La Découverte\r\n".encode("cp1252"))
    r = get_reader("csv")(p, "t")
    assert r.open().extra["encoding"] == "cp1252"
    assert pd.concat(r.batches())["LIBGEO"].item() == "La Découverte"


def test_csv_read_with_the_wrong_separator_fails_clearly(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("CODGEO;LIBGEO\nQP035001;La Découverte\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"file x.csv, line 1: only one column found with separator ','"):
        get_reader("csv")(p, "t", {"sep": ","}).open()


@pytest.mark.parametrize("fmt", ["geojson", "csv"])
def test_html_error_page_is_refused(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"data.{fmt}"
    p.write_text("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>")
    with pytest.raises(InputError, match=r"source s, file data\.\w+: the server sent an HTML page"):
        get_reader(fmt)(p, "s").open()


@pytest.mark.parametrize("fmt", ["geojson", "csv"])
def test_empty_file_is_refused(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"empty.{fmt}"
    p.write_bytes(b"\n")
    with pytest.raises(InputError, match="empty file"):
        get_reader(fmt)(p, "s").open()


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    text = QPV_SAMPLE.read_text(encoding="utf-8").splitlines()
    assert '"CODE_QP":' in text[5]
    text[5] = text[5].replace('"CODE_QP":', '"CODE_QP"')  # a colon lost on line 6
    p = tmp_path / "broken.geojson"
    p.write_text("\n".join(text), encoding="utf-8")
    with pytest.raises(InputError, match=r"file broken.geojson, line 6: invalid JSON: Expecting ':'"):
        get_reader("geojson")(p, "qpv_2015").open()
