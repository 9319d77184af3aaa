"""The INSEE archive reader (`format: insee`), driven by the archive's own dictionary: what it reads, how it
names each cell's level, value and status, and how it refuses an archive that is not what a load expects.

The archives are built here in INSEE's usual infra-communal layout (a FIXTURE: tests/data/PROVENANCE.md), small
enough for each case to show one rule; the full product is tests/data/insee_qpv24_fixture.py."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from qpvhub.ingest.readers import get_reader
from qpvhub.ingest.readers.insee import MARKERS, OUTPUT, _encoding, _sep, read_dictionary
from qpvhub.platform.errors import InputError
from tests.data.insee_qpv24_fixture import archive as fixture_archive

META = "COD_VAR;LIB_VAR;TYPE_VAR\nCODGEO;Code géographique;CHAR\nLIBGEO;Libellé;CHAR\nPOP;Population;NUM\n" \
       "TX;Taux de pauvreté (%);NUM\n"


def _zip(tmp_path: Path, members: dict[str, str | bytes], name: str = "a.zip") -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text.encode("utf-8") if isinstance(text, str) else text)
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def _read(tmp_path: Path, members: dict[str, str | bytes], batch_size: int = 50_000, **options) -> pd.DataFrame:
    r = get_reader("insee")(_zip(tmp_path, members), "insee_qpv24_test", options, batch_size=batch_size)
    info = r.open()
    assert info.columns == OUTPUT
    df = pd.concat(list(r.batches()), ignore_index=True)
    return df.astype({"__status": object}).where(df.notna(), None)


def test_encoding_and_separator_are_sniffed() -> None:
    assert _encoding(b"\xef\xbb\xbfCODGEO") == "utf-8-sig"
    assert _encoding("CODGEO;Libellé".encode()) == "utf-8"
    assert _encoding("CODGEO;Libellé".encode("cp1252")) == "cp1252"
    assert _sep("A;B;C") == ";" and _sep("A,B,C") == "," and _sep("A\tB\tC") == "\t" and _sep("A|B|C") == "|"
    assert _sep("A;B,C;D") == ";"


@pytest.mark.parametrize("text, expected", [
    (META, {"CODGEO": "Code géographique", "LIBGEO": "Libellé", "POP": "Population", "TX": "Taux de pauvreté (%)"}),
    # modalities listed under their variable: the variable's first label is kept, once
    ("COD_VAR;LIB_VAR;COD_MOD;LIB_MOD\nTYPE;Type de quartier;1;Centre\nTYPE;Autre libellé;2;Périphérie\n",
     {"TYPE": "Type de quartier"}),
    # other spellings of the header, a BOM, lower case, spaces, a blank code skipped
    ("\ufeffvariable,libelle\n POP , Population \n,orphelin\n", {"POP": "Population"}),
    ("NOM_VAR\tINTITULE\nPOP\tPopulation\n", {"POP": "Population"}),
    # no label column: codes with empty labels
    ("COD_VAR\nPOP\nTX\n", {"POP": "", "TX": ""}),
    ("", {}),
])
def test_dictionary_layouts(tmp_path: Path, text: str, expected: dict) -> None:
    path = tmp_path / "meta_x.csv"
    path.write_text(text, encoding="utf-8")
    assert read_dictionary(path) == expected


def test_dictionary_in_cp1252_and_without_a_variable_column(tmp_path: Path) -> None:
    path = tmp_path / "meta_x.csv"
    path.write_bytes("COD_VAR;LIB_VAR\nPOP;Population légale\n".encode("cp1252"))
    assert read_dictionary(path) == {"POP": "Population légale"}
    path.write_text("CODE;NOM\nPOP;Population\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no variable column \(COD_VAR or CODE_VAR or VARIABLE or VAR or NOM_VAR\)"):
        read_dictionary(path)


def test_every_cell_is_a_long_row_with_level_label_value_and_status(tmp_path: Path) -> None:
    df = _read(tmp_path, {
        "meta_x.csv": META,
        "x_QP.csv": "CODGEO;LIBGEO;POP;TX\nQN01301M;Quartier A;1200;31,5\nQN01302M;Quartier B;s;ns\n"
                    "QN01303M;Quartier C;nd;\nQN01304M;Quartier D;SO;  12,25  \n",
        "x_COM.csv": "CODGEO;LIBGEO;POP;TX\n13201;Marseille 1er;40000;20\n",
        "x_HQP.csv": "CODGEO;LIBGEO;POP;TX\n13201;Marseille 1er;38800;18,4\n",
        "x_ENSQP.csv": "CODGEO;LIBGEO;POP;TX\nENSQP;Ensemble;5000000;43\n",
        "x_EPCI.csv": "CODGEO;LIBGEO;POP;TX\n200054807;Métropole;1900000;18\n",
        "x_FR.csv": "CODGEO;LIBGEO;POP;TX\nFRANCE;France;68000000;14,5\n",
    })
    plain = df.rename(columns=lambda c: c.strip("_"))  # namedtuples refuse names starting with _
    cell = {(r.level, r.code, r.variable): r for r in plain.itertuples()}
    a = cell[("qpv", "QN01301M", "TX")]
    assert a.value == 31.5 and a.status is None and a.label == "Taux de pauvreté (%)" and a.name == "Quartier A"
    assert a.feature == 2  # the data line in its file (header = line 1)
    for (code, var), status in {("QN01302M", "POP"): "s", ("QN01302M", "TX"): "ns", ("QN01303M", "POP"): "nd",
                                ("QN01303M", "TX"): "blank", ("QN01304M", "POP"): "so"}.items():
        r = cell[("qpv", code, var)]
        assert r.status == status and (r.value is None or math.isnan(r.value)), (code, var)
    assert cell[("qpv", "QN01304M", "TX")].value == 12.25 and cell[("qpv", "QN01304M", "TX")].feature == 5
    assert {lv for lv, _, _ in cell} == {"qpv", "commune", "commune_hors_qpv", "ensemble_qpv", "epci", "france"}
    assert cell[("commune_hors_qpv", "13201", "POP")].value == 38800
    assert cell[("epci", "200054807", "POP")].value == 1900000
    assert len(df) == 2 * (4 + 5)
    assert df["__value"].dtype == "float64" and set(MARKERS) == {"s", "ns", "nd", "so"}


def test_batches_keep_line_numbers_and_the_separator_and_encoding_options(tmp_path: Path) -> None:
    rows = "".join(f"QN0130{i}M\t{i}0\n" for i in range(1, 8))
    df = _read(tmp_path, {"meta_x.csv": "COD_VAR;LIB_VAR\nPOP;Population\n",
                          "x_QP.csv": ("CODGEO\tPOP\n" + rows).encode("cp1252")},
               batch_size=3, ids=["CODGEO"], sep="\t", encoding="cp1252")
    assert list(df["__feature"]) == list(range(2, 9)) and list(df["__value"]) == [10.0 * i for i in range(1, 8)]
    assert df["__name"].isna().all()  # no LIBGEO among the identifiers


def test_levels_option_and_patterns(tmp_path: Path) -> None:
    df = _read(tmp_path, {"meta_pop.csv": "COD_VAR;LIB_VAR\nPOP;Population\n",
                          "pop_QPV24.csv": "CODGEO;LIBGEO;POP;;\nQN01301M;A;10;;\n"},
               levels={"*.csv": "qpv"})
    assert list(df["__level"]) == ["qpv"] and list(df["__variable"]) == ["POP"]  # trailing empty columns dropped
    with pytest.raises(InputError, match=r"pop_QPV24\.csv: no level matches its name \(levels: \['\*_QP\.\*'"):
        _read(tmp_path, {"meta_pop.csv": "COD_VAR;LIB_VAR\nPOP;Population\n",
                         "pop_QPV24.csv": "CODGEO;LIBGEO;POP\nQN01301M;A;10\n"})


def test_meta_and_data_patterns_choose_the_members(tmp_path: Path) -> None:
    df = _read(tmp_path, {"dico.csv": "COD_VAR;LIB_VAR\nPOP;Population\n", "x_QP.csv": "CODGEO;POP\nQN01301M;1\n",
                          "notes_QP.csv": "CODGEO;AUTRE\nQN01301M;1\n", "lisezmoi.txt": "texte"},
               meta="dico.csv", data="x_*.csv")
    assert list(df["__variable"]) == ["POP"]


@pytest.mark.parametrize("members, message", [
    ({"x_QP.csv": "CODGEO;POP\nQN01301M;1\n"}, r"expected one dictionary 'meta_\*' in the archive, found none among"),
    ({"meta_a.csv": META, "meta_b.csv": META, "x_QP.csv": "CODGEO;POP\nQN01301M;1\n"},
     r"expected one dictionary 'meta_\*' in the archive, found \['meta_a\.csv', 'meta_b\.csv'\]"),
    ({"meta_a.csv": META}, r"no data file '\*\.csv' beside the dictionary among \['meta_a\.csv'\]"),
    ({"meta_a.csv": META, "x_QP.csv": "CODE;POP\nQN01301M;1\n"},
     r"x_QP\.csv: its first column is \['CODE'\], not CODGEO"),
    ({"meta_a.csv": META, "x_QP.csv": "CODGEO;POP;NOUVEAU\nQN01301M;1;2\n"},
     r"variable\(s\) \['NOUVEAU'\] not in the dictionary meta_a\.csv: the archive is inconsistent"),
    ({"meta_a.csv": "CODE;NOM\nPOP;P\n", "x_QP.csv": "CODGEO;POP\nQN01301M;1\n"},
     r"dictionary meta_a\.csv: no variable column"),
    ({"meta_a.csv": META, "x_QP.csv": "CODGEO;POP\nQN01301M;1 200\n"},
     r"line 2, column 'POP': data file x_QP\.csv: '1 200' is neither a number nor one of INSEE's markers "
     r"\(s, ns, nd, so\)"),
    ({"meta_a.csv": META, "x_QP.csv": "CODGEO;POP;TX\nQN01301M;1;2\nQN01302M;3;inf\n"},
     r"line 3, column 'TX': data file x_QP\.csv: 'inf' is neither a number"),
])
def test_an_archive_a_load_cannot_trust_is_refused_naming_what(tmp_path: Path, members: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as exc:
        _read(tmp_path, members)
    assert exc.value.source == "insee_qpv24_test" and exc.value.file == "a.zip"


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_text("CODGEO;POP\nQN01301M;1\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a ZIP archive"):
        get_reader("insee")(path, "s", {}).open()


def test_variables_the_indicators_need_by_name_or_pattern(tmp_path: Path) -> None:
    members = {"meta_a.csv": "COD_VAR;LIB_VAR\nDISP_TP60_A22;Taux\nPOP;Population\n",
               "x_QP.csv": "CODGEO;DISP_TP60_A22;POP\nQN01301M;30;1\n"}
    assert len(_read(tmp_path, members, requires=["DISP_TP60_A*", "POP"])) == 2  # a new year suffix: no change
    with pytest.raises(InputError) as exc:
        _read(tmp_path, members, requires=["DISP_MED_A*", "POP", "DEFM_ABC"], release=2022, dataset="revenus")
    text = str(exc.value)
    assert "dataset revenus, release 2022: variable(s) ['DISP_MED_A*', 'DEFM_ABC'] missing" in text
    assert "the dictionary lists 2 variables" in text and exc.value.column == "DISP_MED_A*"
    with pytest.raises(InputError, match=r"^(?!.*dataset).*variable\(s\) \['X'\] missing"):
        _read(tmp_path, members, requires=["X"])


def test_custom_markers_and_the_fixture_product(tmp_path: Path) -> None:
    df = _read(tmp_path, {"meta_a.csv": META, "x_QP.csv": "CODGEO;POP\nQN01301M;C\nQN01302M;4\n"}, markers=["c"])
    assert list(df["__status"]) == ["c", None] and df["__value"].iloc[1] == 4
    with pytest.raises(InputError, match="'s' is neither a number"):
        _read(tmp_path, {"meta_a.csv": META, "x_QP.csv": "CODGEO;POP\nQN01302M;s\n"}, markers=["c"])
    path = tmp_path / "defm.zip"
    path.write_bytes(fixture_archive("defm"))
    r = get_reader("insee")(path, "insee_qpv24_defm", {})
    info = r.open()
    assert info.extra["variables"] == 2 and info.extra["dictionary"].startswith("meta_")
    assert sorted(info.extra["files"].values()) == ["commune", "commune_hors_qpv", "qpv"]


def test_what_a_header_or_a_dictionary_line_may_look_like(tmp_path: Path) -> None:
    """Identifiers in any case and a third one kept out of the variables; spaces around names; commas in a label
    or a name (the separator is the header's); members in folders and as .txt; an encoding forced by the entry."""
    df = _read(tmp_path, {
        "dossier/sous/meta_a.csv": "COD_VAR;LIB_VAR\nPOP;Population, totale, légale\n",
        "dossier/sous/a_QP.txt": "codgeo;libgeo;IRIS; POP \nQN01301M;Nom, avec, des, virgules;x;7\n",
    }, ids=["CODGEO", "LIBGEO", "IRIS"], data="a_*")
    assert list(df.columns) == [*OUTPUT, "__feature"]
    assert df.to_dict("records") == [{"__level": "qpv", "__code": "QN01301M", "__name": "Nom, avec, des, virgules",
                                      "__variable": "POP", "__label": "Population, totale, légale", "__value": 7.0,
                                      "__status": None, "__feature": 2}]
    forced = _read(tmp_path, {"meta_a.csv": META, "x_QP.csv": "CODGEO;LIBGEO;POP\nQN01301M;Libellé;7\n"},
                   encoding="cp1252")
    assert forced["__name"].iloc[0] == "Libellé".encode().decode("cp1252")  # the entry's choice, obeyed
    other = _read(tmp_path, {"meta_a.csv": META, "x_QP.csv": "CODE;POP\nQN01301M;7\n"}, ids=["code"])
    assert list(other["__code"]) == ["QN01301M"] and other["__name"].isna().all()


def test_trailing_separators_and_an_empty_data_file(tmp_path: Path) -> None:
    df = _read(tmp_path, {"meta_a.csv": META, "x_QP.csv": "CODGEO;LIBGEO;POP;;\nQN01301M;A;10;;\nQN01302M;B;s;;\n"})
    assert list(df["__code"]) == ["QN01301M", "QN01302M"] and df["__value"].iloc[0] == 10
    assert pd.isna(df["__value"].iloc[1]) and df["__status"].iloc[1] == "s"
    with pytest.raises(InputError, match=r"x_QP\.csv: its first column is \[\], not CODGEO"):
        _read(tmp_path, {"meta_a.csv": META, "x_QP.csv": ""})


def test_batches_open_the_archive_themselves(tmp_path: Path) -> None:
    r = get_reader("insee")(_zip(tmp_path, {"meta_a.csv": META, "x_QP.csv": "CODGEO;POP\nQN01301M;3\n"}), "s", {})
    assert [list(b["__value"]) for b in r.batches()] == [[3.0]]
