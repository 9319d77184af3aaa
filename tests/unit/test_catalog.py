"""The catalogue and region files: validated, with errors naming file, key and expectation."""

from pathlib import Path

import pytest
import yaml

from qpvhub.catalog.loader import load_catalog, load_order, load_source, resolve_source
from qpvhub.catalog.regions import load_region, load_regions
from qpvhub.platform.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "include" / "sources"


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    p = tmp_path / f"{name}.yml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return p


def _qpv_spec() -> dict:
    return yaml.safe_load((SOURCES / "qpv_2015.yml").read_text(encoding="utf-8"))


def test_shipped_catalogue_loads_with_samples_present() -> None:
    cat = load_catalog(SOURCES)
    assert {"qpv_2015", "cog_communes"} <= set(cat)
    for s in cat.values():
        samples = [f.sample for f in s.feeds()] if s.collection else [s.sample]
        if s.series:  # a series' bundled releases (its current one need not be bundled: Filosofi 2021)
            samples = [x for x in samples if x] + list(s.series.samples.values())
        if s.no_sample:  # none bundled, and the entry says why (INSEE's figures for the 2024 list)
            continue
        assert samples and all(x and (ROOT / "include" / x).is_file() for x in samples), s.id
        assert s.columns and s.licence and s.publisher


def test_unknown_key_is_named_with_file(tmp_path: Path) -> None:
    spec = _qpv_spec() | {"shedule": "@daily"}
    p = _write(tmp_path, "qpv_2015", spec)
    with pytest.raises(ConfigError) as exc:
        load_source(p)
    assert str(p) in str(exc.value) and "shedule: unknown key" in str(exc.value)


@pytest.mark.parametrize("where, bad", [
    ("table", "qpv; DROP TABLE ref.qpv; --"),
    ("column", 'code"qp'),
])
def test_sql_injection_in_identifiers_is_refused(tmp_path: Path, where: str, bad: str) -> None:
    spec = _qpv_spec()
    if where == "table":
        spec["target"]["table"] = bad
    else:
        spec["columns"][bad] = spec["columns"].pop("lib_com")
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        load_source(_write(tmp_path, "qpv_2015", spec))


def test_id_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must match the file name"):
        load_source(_write(tmp_path, "other", _qpv_spec()))


def test_derived_column_needs_a_transform(tmp_path: Path) -> None:
    spec = _qpv_spec()
    del spec["transform"]
    with pytest.raises(ConfigError, match="derived but no 'transform'"):
        load_source(_write(tmp_path, "qpv_2015", spec))


def test_unknown_column_type(tmp_path: Path) -> None:
    spec = _qpv_spec()
    spec["columns"]["lib_qp"]["type"] = "varchar"
    with pytest.raises(ConfigError, match=r"columns\.lib_qp\.type.*unknown column type 'varchar'"):
        load_source(_write(tmp_path, "qpv_2015", spec))


def test_load_order_puts_dependencies_first() -> None:
    order = [s.id for s in load_order(load_catalog(SOURCES))]
    assert order.index("cog_communes") < order.index("qpv_2015")


def test_unknown_dependency_is_an_error(tmp_path: Path) -> None:
    spec = _qpv_spec() | {"depends_on": ["nope"]}
    src = load_source(_write(tmp_path, "qpv_2015", spec))
    with pytest.raises(ConfigError, match="depends on unknown source 'nope'"):
        load_order({src.id: src})


def test_resolve_by_id_or_path() -> None:
    assert resolve_source("qpv_2015", SOURCES).id == "qpv_2015"
    assert resolve_source(str(SOURCES / "cog_communes.yml"), SOURCES).id == "cog_communes"
    with pytest.raises(ConfigError, match="unknown source 'x'.*cog_communes"):
        resolve_source("x", SOURCES)


def test_regions_shipped_and_bad_departement_refused(tmp_path: Path) -> None:
    regions = load_regions(ROOT / "include" / "regions", ROOT / "include" / "reference")
    assert regions["53"].departements == ["22", "29", "35", "56"]
    assert regions["52"].name == "Pays de la Loire"
    p = _write(tmp_path, "53", {"code": "53", "name": "Bretagne", "departements": ["35", "3X"],
                                "bbox": [-5, 47, -1, 49]})
    with pytest.raises(ConfigError, match="département code '3X'"):
        load_region(p, ROOT / "include" / "reference")


@pytest.mark.parametrize("exp, msg", [
    ({"expectation": "expect_column_values_to_be_nul", "kwargs": {"column": "code_qp"}},
     r"quality.expectations\[0\].expectation: 'expect_column_values_to_be_nul' is not a GX Core expectation"),
    ({"expectation": "unexpected_rows", "kwargs": {}},
     r"quality.expectations\[0\].kwargs: unexpected_rows_expectation cannot be built: .*unexpected_rows_query"),
])
def test_unknown_expectation_or_missing_argument_named_with_file_and_key(tmp_path: Path, exp, msg) -> None:
    """Checked against GX Core's registry before any run (not at DAG parse time: importing GX takes seconds)."""
    from qpvhub.quality.suites import check_expectations

    spec = _qpv_spec()
    spec["quality"]["expectations"] = [exp]
    p = _write(tmp_path, "qpv_2015", spec)
    with pytest.raises(ConfigError, match=msg) as exc:
        check_expectations(load_source(p), p)
    assert str(p) in str(exc.value)


def test_shipped_expectations_all_build() -> None:
    from qpvhub.quality.suites import check_expectations

    for s in load_catalog(SOURCES).values():
        check_expectations(s)


def test_no_sample_contradicting_a_bundled_file_is_refused(tmp_path: Path) -> None:
    """`no_sample` says why a shipped entry bundles no file (the shipped-catalogue test holds every entry to
    one or the other); saying it beside a bundled file is a contradiction named as such."""
    with pytest.raises(ConfigError, match="'no_sample' says no file is bundled, but one is"):
        load_source(_write(tmp_path, "qpv_2015", _qpv_spec() | {"no_sample": "x"}))
    spec = {k: v for k, v in _qpv_spec().items() if k not in ("sample", "sample_provenance")}
    assert load_source(_write(tmp_path, "qpv_2015", spec | {"no_sample": "not public"})).no_sample == "not public"


def test_every_shipped_entry_has_a_production_location() -> None:
    """#12's acceptance: no entry is sample-only; a scheduled run always has somewhere real to fetch from."""
    missing = [s.id for s in load_catalog(SOURCES).values() if not s.production]
    assert missing == []


def test_a_release_in_the_url_is_for_series_with_a_current_release(tmp_path: Path) -> None:
    """`{release}` in a series' url is filled per run; elsewhere, or with no release a schedule loads, it is
    refused where the file is named."""
    sig = yaml.safe_load((SOURCES / "sigville_ipro.yml").read_text(encoding="utf-8"))
    src = load_source(_write(tmp_path, "sigville_ipro", sig))
    assert src.url.endswith("/IPRO_{release}.csv") and src.for_release(2019).url.endswith("/IPRO_2019.csv")
    assert src.for_release(2019).for_release(2019).url == src.for_release(2019).url
    with pytest.raises(ConfigError, match=r"(?s)sigville_ipro\.yml.*url names \{release\}: only a series' url can"):
        load_source(_write(tmp_path, "sigville_ipro", sig | {"series": sig["series"] | {"current": None}}))
    with pytest.raises(ConfigError, match=r"(?s)qpv_2015\.yml.*url names \{release\}"):
        load_source(_write(tmp_path, "qpv_2015", _qpv_spec() | {"url": "https://example.org/qpv_{release}.zip"}))


def test_the_json_schemas_are_current_and_every_file_names_its_schema() -> None:
    """Editors complete and check the YAML files from the schemas generated from the models (`qpvhub config
    schemas`); a model change without regenerating them fails here."""
    import json

    from qpvhub.catalog.schema import MODELINE, write_schemas

    assert write_schemas(ROOT / "include", check=True) == [], "run `qpvhub config schemas`"
    for folder in ("sources", "regions"):
        for path in sorted((ROOT / "include" / folder).glob("*.yml")):
            assert path.read_text(encoding="utf-8").startswith(MODELINE + "schema.json\n"), path
    schema = json.loads((ROOT / "include" / "sources" / "schema.json").read_text(encoding="utf-8"))
    assert {"id", "title", "columns", "target"} <= set(schema["required"]) and "series" in schema["properties"]


def test_two_entries_writing_one_partition_are_refused_naming_both(tmp_path) -> None:
    """The review's case: a region's own 2015 perimeters as a second entry writing ref.qpv generation 2015 would
    swap out the first entry's rows at its next load. Refused when the catalogue loads, before any run."""
    import shutil

    from qpvhub.catalog.loader import load_catalog
    from qpvhub.platform.errors import ConfigError

    catalog = tmp_path / "sources"
    shutil.copytree(SOURCES, catalog)
    text = (catalog / "qpv_2015.yml").read_text(encoding="utf-8").replace("id: qpv_2015", "id: qpv_2015_paca")
    (catalog / "qpv_2015_paca.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"(?s)qpv_2015_paca\.yml: writes partition generation = 2015 of ref\.qpv, "
                                          r"which .*qpv_2015\.yml already loads.*qpvhub region add"):
        load_catalog(catalog)
    (catalog / "qpv_2015_paca.yml").unlink()
    bpe = (catalog / "bpe.yml").read_text(encoding="utf-8").replace("id: bpe", "id: bpe_bis")
    (catalog / "bpe_bis.yml").write_text(bpe, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bpe_bis\.yml: writes src\.bpe, which .*bpe\.yml already loads"):
        load_catalog(catalog)
    (catalog / "bpe_bis.yml").unlink()
    assert {"qpv_2015", "qpv_2024"} <= set(load_catalog(catalog))  # two static partitions of one table: fine
