"""Shapefile, GeoPackage, (Geo)Parquet, GTFS and zipped CSV readers on the bundled real files."""

import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from qpvhub.ingest.readers import get_reader
from qpvhub.platform.errors import InputError
from tests.conftest import QPV_SAMPLE, ROOT, SAMPLES


def _read(fmt: str, path: Path, options: dict | None = None, batch_size: int = 50_000):
    r = get_reader(fmt)(path, "t", options or {}, batch_size=batch_size)
    info = r.open()
    return info, pd.concat(list(r.batches()), ignore_index=True)


def _copy(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copy(SAMPLES / name, dest)
    return dest


TRI = "tri_2020_sig_di_35_FIXTURE.zip"  # Géorisques' per-département delivery: a folder, several layers
FOR = "n_tri_rennes_inondable_01_01for_s_035.shp"


def test_zipped_shapefile_with_prj(tmp_path: Path) -> None:
    info, df = _read("shapefile", _copy(tmp_path, TRI), {"member": FOR})
    assert info.crs == "EPSG:2154"
    assert info.columns == ["id_s_inond", "typ_inond", "typ_inond2", "scenario", "est_ref", "cours_deau", "id_tri"]
    assert list(df["scenario"]) == ["01For"]
    assert df["typ_inond2"].isna().all() and df["__wkb"].map(len).gt(100).all()
    with pytest.raises(InputError, match=r"expected one .shp in the archive, found \['n_tri_rennes_inondable_01_01"):
        _read("shapefile", _copy(tmp_path, TRI))  # four layers: which one is a choice the catalogue makes


def test_zipped_shapefile_layers_matching_a_pattern(tmp_path: Path) -> None:
    """`reader.members`: every flood-surface layer, one after the other, each row with its layer's name; the
    TRI's perimeter layer in the same folder does not match and is not read."""
    options = {"members": "n_tri_*_inondable_*_s_*.shp", "member_column": "couche"}
    info, df = _read("shapefile", _copy(tmp_path, TRI), options)
    assert info.crs == "EPSG:2154" and info.columns[-1] == "couche" and "nom_tri" not in info.columns
    assert info.extra["layers"] == [f"FRG_TRI_RENNES/n_tri_rennes_inondable_01_{s}_s_035.shp"
                                    for s in ("01for", "02moy", "04fai")]
    assert list(df["scenario"]) == ["01For", "02Moy", "04Fai"] and list(df["id_s_inond"]) == ["SIN_1"] * 3
    assert list(df["couche"]) == [f"n_tri_rennes_inondable_01_{s}_s_035" for s in ("01for", "02moy", "04fai")]
    assert df["__feature"].tolist() == [1, 2, 3]  # numbered across the layers: one number, one row
    with pytest.raises(InputError, match=r"no Shapefile matching 'n_tri_\*_inondable_\*_s_\*.shp' in the archive; "
                                         r"its Shapefiles: \['FRG_TRI_RENNES/n_tri_rennes_tri_s_035.shp'\]"):
        src = zipfile.ZipFile(SAMPLES / TRI)
        only_perimeter = tmp_path / "perimeter.zip"
        with zipfile.ZipFile(only_perimeter, "w") as z:
            for n in src.namelist():
                if "_tri_s_" in n:
                    z.writestr(n, src.read(n))
        _read("shapefile", only_perimeter, options)


def test_shapefile_without_prj_is_refused_unless_crs_declared(tmp_path: Path) -> None:
    src = zipfile.ZipFile(SAMPLES / TRI)
    bad = tmp_path / "noprj.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for n in src.namelist():
            if not n.endswith(".prj"):
                z.writestr(n, src.read(n))
    with pytest.raises(InputError, match=rf"file noprj.zip: {FOR}: no .prj file"):
        _read("shapefile", bad, {"member": FOR})
    info, _ = _read("shapefile", bad, {"member": FOR, "crs": "EPSG:2154"})
    assert info.crs == "EPSG:2154"


def test_geopackage_layer(tmp_path: Path) -> None:
    gpkg = tmp_path / "qpv.gpkg"
    gpd.read_file(QPV_SAMPLE).to_crs(2154).to_file(gpkg, layer="qpv", driver="GPKG")
    info, df = _read("gpkg", gpkg)
    assert info.crs == "EPSG:2154" and len(df) == 6 and "CODE_QP" in info.columns
    not_gpkg = tmp_path / "x.gpkg"
    not_gpkg.write_text("id;name\n1;a\n")
    with pytest.raises(InputError, match="not a GeoPackage"):
        _read("gpkg", not_gpkg)


def test_geoparquet_streams_in_batches_with_crs(tmp_path: Path) -> None:
    pq = tmp_path / "qpv.parquet"
    gpd.read_file(QPV_SAMPLE).to_parquet(pq)
    info, df = _read("parquet", pq, batch_size=4)
    assert "EPSG" in info.crs or "4326" in info.crs
    assert len(df) == 6 and set(df["CODE_QP"]) == {f"QP03500{i}" for i in range(1, 7)}
    assert df["__feature"].tolist() == [1, 2, 3, 4, 5, 6]


def test_gtfs_real_feed_departures_per_stop(tmp_path: Path) -> None:
    info, df = _read("gtfs", _copy(tmp_path, "gtfs_star_rennes_20160419.zip"))
    assert len(df) == 1493 and info.crs == "EPSG:4326"
    assert set(df["reference_week"]) == {"2016-05-09"}  # the feed's first full week, a typical one
    kennedy = df[df["stop_name"] == "J.F. Kennedy"].iloc[0]
    assert kennedy["departures_mon"] > 500 and kennedy["departures_sun"] < kennedy["departures_mon"]
    # Monday's departures, counted here independently from the raw files, over every stop
    with zipfile.ZipFile(SAMPLES / "gtfs_star_rennes_20160419.zip") as z:
        cal = pd.read_csv(z.open("calendar.txt"), dtype=str)
        ex = pd.read_csv(z.open("calendar_dates.txt"), dtype=str)
        trips = pd.read_csv(z.open("trips.txt"), dtype=str, usecols=["trip_id", "service_id"])
        st = pd.read_csv(z.open("stop_times.txt"), dtype=str, usecols=["trip_id", "pickup_type"])
    on = set(cal[(cal.monday == "1") & (cal.start_date <= "20160509") & (cal.end_date >= "20160509")].service_id)
    on |= set(ex[(ex.date == "20160509") & (ex.exception_type == "1")].service_id)
    on -= set(ex[(ex.date == "20160509") & (ex.exception_type == "2")].service_id)
    monday_trips = set(trips[trips.service_id.isin(on)].trip_id)
    expected = int((st.trip_id.isin(monday_trips) & (st.pickup_type != "1")).sum())
    assert int(df["departures_mon"].sum()) == expected


def test_gtfs_missing_stop_times_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "feed.zip"
    with zipfile.ZipFile(SAMPLES / "gtfs_star_rennes_20160419.zip") as src, zipfile.ZipFile(bad, "w") as z:
        for n in src.namelist():
            if n != "stop_times.txt":
                z.writestr(n, src.read(n))
    with pytest.raises(InputError, match="file feed.zip: not a complete GTFS feed: missing stop_times.txt"):
        _read("gtfs", bad)


def test_zipped_csv_is_read_from_inside_the_archive(tmp_path: Path) -> None:
    z = tmp_path / "BASE_TD_FILO_DISP_IRIS_2019_CSV.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(SAMPLES / "insee_filosofi2019_disp_iris_reg52_53.csv", "BASE_TD_FILO_DISP_IRIS_2019.csv")
        zf.writestr("meta_BASE_TD_FILO_DISP_IRIS_2019.txt", "documentation")
    with pytest.raises(InputError, match="expected one CSV in the archive"):
        _read("csv", z)
    info, df = _read("csv", z, {"member": "BASE_TD_FILO_DISP_IRIS_2019.csv"})
    assert len(df) == 1021 and info.columns[0] == "IRIS"
    assert df["IRIS"].str.fullmatch(r"\d{9}").all()


def test_sigville_trailing_empty_columns_and_trailing_space_header() -> None:
    info, df = _read("csv", SAMPLES / "sigville_qpv2015_IPRO_2022_reg52_53.csv")
    assert len(info.columns) == 61 and "EVOL_CA_N_E" in info.columns  # 'EVOL_CA_N_E ' stripped
    assert info.extra == {"encoding": "utf-8-sig", "sep": ";"}
    row = df[df["CODGEO"] == "QP035002"].iloc[0]
    assert row["ABC"] == "1\u202f110" and row["TX_TOT_EMPL"] == "35,8"


# ---------------------------------------------------------------- xlsx (INSEE references)
def _book(tmp_path, rows: list[list], sheet: str = "Emboitements_IRIS", titles: int = 5, name: str = "ref.xlsx"):
    import openpyxl

    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    for _ in range(titles):
        ws.append(["titre"])
    for r in rows:
        ws.append(r)
    path = tmp_path / name
    book.save(path)
    return path


def test_xlsx_reads_the_sample_in_insee_layout(tmp_path: Path) -> None:
    """The DERIVED sample (INSEE's layout: ZIP, sheet Emboitements_IRIS, header on row 6) gives the very rows
    of the CSV it was built from, codes as text."""
    import csv as _csv

    from qpvhub.ingest.readers import get_reader

    sample = _copy(tmp_path, "reference_IRIS_geo2021_reg52_53_DERIVED.zip")  # readers extract next to the file
    reader = get_reader("xlsx")(sample, "iris_ref", {"sheet": "Emboitements_IRIS", "header_row": 6})
    assert reader.open().columns == ["CODE_IRIS", "LIB_IRIS", "TYP_IRIS", "GRD_QUART", "DEPCOM", "LIBCOM", "UU2020",
                                     "REG", "DEP"]
    got = pd.concat(list(reader.batches()))
    text = (ROOT / "include" / "sample_data" / "insee_iris_ref_2021_reg52_53.csv").read_text(encoding="utf-8")
    expected = list(_csv.DictReader(text.splitlines(), delimiter=";"))
    assert len(got) == len(expected) == 3680
    assert got.iloc[0]["CODE_IRIS"] == expected[0]["CODE_IRIS"] == "220010000"
    assert got.iloc[0]["__feature"] == 7  # row in the sheet: 5 titles, the header, then the data
    assert list(got["DEPCOM"]) == [r["DEPCOM"] for r in expected]


def test_xlsx_errors_name_sheet_and_row(tmp_path) -> None:
    from qpvhub.ingest.readers import get_reader
    from qpvhub.platform.errors import InputError

    path = _book(tmp_path, [["CODE_IRIS", "DEPCOM"], ["013010101", "01301"]])
    reader = get_reader("xlsx")(path, "iris_ref", {"sheet": "Emboitements_IRIS", "header_row": 6})
    reader.open()
    (df,) = list(reader.batches())
    assert df.iloc[0].to_dict() == {"CODE_IRIS": "013010101", "DEPCOM": "01301", "__feature": 7}  # zeros kept
    with pytest.raises(InputError, match=r"no sheet 'IRIS' in the workbook \(sheets: \['Emboitements_IRIS'\]\)"):
        get_reader("xlsx")(path, "iris_ref", {"sheet": "IRIS"}).open()
    with pytest.raises(InputError, match=r"row 20 of sheet 'Emboitements_IRIS' is empty: wrong header_row\?"):
        get_reader("xlsx")(path, "iris_ref", {"header_row": 20}).open()
    (tmp_path / "not.xlsx").write_text("CODE_IRIS;DEPCOM\n")
    with pytest.raises(InputError, match="not an .xlsx workbook nor a ZIP"):
        get_reader("xlsx")(tmp_path / "not.xlsx", "iris_ref", {}).open()


def _rewrite(book: Path, out: Path, member: str, data: bytes) -> Path:
    """The workbook with one of its XML members replaced (what a hostile publisher could serve)."""
    import zipfile

    with zipfile.ZipFile(book) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data if info.filename == member else src.read(info.filename))
    return out


def test_a_workbook_is_held_to_the_archives_budget(tmp_path) -> None:
    """The review's 377 KB workbook holding one 200 MB cell loaded (1.45 GB of memory): a workbook is a ZIP, and the
    budget now applies to it before openpyxl reads a byte; XML entities (entity expansion) are an error naming the
    file, not a traceback."""
    from qpvhub.ingest.readers import get_reader
    from qpvhub.platform.errors import InputError

    book = _book(tmp_path, [["CODE_IRIS", "LIB_IRIS"], ["013010101", "x"]])
    big = '<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/' \
          'main" count="1" uniqueCount="1"><si><t>' + "A" * (80 * 1024**2) + "</t></si></sst>"
    import zipfile

    sheet = next(n for n in zipfile.ZipFile(book).namelist() if n.startswith("xl/worksheets/sheet"))
    bomb = _rewrite(book, tmp_path / "bomb.xlsx", "xl/sharedStrings.xml" if "xl/sharedStrings.xml" in zipfile.ZipFile(
        book).namelist() else sheet, big.encode())
    with pytest.raises(InputError, match=r"file bomb\.xlsx: workbook or archive (member .* )?expands \d+×"):
        get_reader("xlsx")(bomb, "iris_ref", {"header_row": 6}).open()

    xml = zipfile.ZipFile(book).read(sheet).decode()
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;">]>' + body
    hostile = _rewrite(book, tmp_path / "laughs.xlsx", sheet, laughs.encode())
    with pytest.raises(InputError, match=r"file laughs\.xlsx: cannot (open the workbook|read the sheet)"):
        r = get_reader("xlsx")(hostile, "iris_ref", {"header_row": 6})
        r.open()
        list(r.batches())


def test_many_small_members_are_one_bomb(tmp_path) -> None:
    """2,000 members of 1 MiB passed a per-member check one by one (each under its 1 MiB floor): the whole archive's
    expansion is now checked too (here 200 members, 200 MiB from a few hundred KB)."""
    import zipfile

    from qpvhub.ingest.archive import safe_extract
    from qpvhub.platform.errors import InputError

    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(200):
            z.writestr(f"part_{n:04}.csv", b"0" * (1024**2 - 1))
    with pytest.raises(InputError, match=r"archive expands \d+× in total .*archive bomb refused"):
        safe_extract(path, tmp_path / "out", source="bpe")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _active_by_day(cal: pd.DataFrame, ex: pd.DataFrame, day: str) -> set[str]:
    """The services running on `day` (YYYYMMDD), the GTFS reference's way, one day at a time."""
    import datetime as dt

    wd = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")[
        dt.datetime.strptime(day, "%Y%m%d").weekday()]
    on = set(cal[(cal[wd] == "1") & (cal.start_date <= day) & (cal.end_date >= day)].service_id)
    on |= set(ex[(ex.date == day) & (ex.exception_type == "1")].service_id)
    return on - set(ex[(ex.date == day) & (ex.exception_type == "2")].service_id)


@pytest.mark.parametrize("feed", ["gtfs_star_rennes_20160419.zip", "gtfs_sailcoop_glenan_2025.zip", "edited"])
def test_gtfs_services_counted_per_day_as_the_reference_says(feed: str) -> None:
    """The week search counts every day's services at once (a matrix): the same count as a day-by-day set, on both
    real feeds and on STAR's with a removal, an addition, a service only in calendar_dates and a blank bound."""
    import datetime as dt

    from qpvhub.ingest.readers.gtfs import _active_counts

    with zipfile.ZipFile(SAMPLES / (feed if feed != "edited" else "gtfs_star_rennes_20160419.zip")) as z:
        cal = pd.read_csv(z.open("calendar.txt"), dtype=str, keep_default_na=False, na_values=[""])
        names = z.namelist()
        ex = (pd.read_csv(z.open("calendar_dates.txt"), dtype=str, keep_default_na=False, na_values=[""])
              if "calendar_dates.txt" in names else pd.DataFrame(columns=["service_id", "date", "exception_type"]))
    if feed == "edited":
        first = cal.iloc[0]
        ex = pd.concat([ex, pd.DataFrame({"service_id": [first.service_id, "EXTRA", first.service_id],
                                          "date": ["20160510", "20160511", "20160512"],
                                          "exception_type": ["2", "1", "1"]})], ignore_index=True)
        cal.loc[1, "end_date"] = None
    bounds = sorted(d for d in [*cal.start_date.dropna(), *cal.end_date.dropna(), *ex.date.dropna()])
    start = dt.datetime.strptime(bounds[0], "%Y%m%d").date()
    n = (dt.datetime.strptime(bounds[-1], "%Y%m%d").date() - start).days + 1
    expected = [len(_active_by_day(cal.fillna({"start_date": "~", "end_date": ""}), ex,
                                   (start + dt.timedelta(days=i)).strftime("%Y%m%d"))) for i in range(n)]
    assert _active_counts(cal, ex, start, n).tolist() == expected and max(expected) > 0
