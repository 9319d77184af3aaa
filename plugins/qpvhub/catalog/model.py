"""The model of a catalogue entry (`include/sources/<id>.yml`): where a dataset is, how to read it, where it
lands (a table, or one partition of it: a QPV list, a release, a feed), how it is checked.

Identifiers that will reach SQL are checked to be plain lowercase identifiers here, and are still
always quoted with `psycopg.sql.Identifier` where used.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qpvhub.platform.errors import ConfigError

IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
COLUMN_TYPES = {
    "text": "text",
    "integer": "integer",
    "bigint": "bigint",
    "double": "double precision",
    "numeric": "numeric",
    "boolean": "boolean",
    "date": "date",
    "smallint": "smallint",
}
GEOMETRY_TYPES = ("Point", "MultiPoint", "MultiLineString", "MultiPolygon")


def _ident(value: str, what: str) -> str:
    if not IDENT_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a plain SQL identifier (lowercase letters, digits, _)")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(Strict):
    """A target column: where it comes from in the source, its type, its documentation."""

    source: str | None = Field(default=None, description="source column name; None for a constant")
    type: str = "text"
    description: str
    constant: Any = None
    derived: bool = Field(default=False, description="filled by the source's transform SQL")
    absent: bool = Field(default=False, description="not in this release's file (a series layout): loads as NULL")
    required: bool = True

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in COLUMN_TYPES:
            raise ValueError(f"unknown column type {v!r}; expected one of {', '.join(COLUMN_TYPES)}")
        return v

    @model_validator(mode="after")
    def _from_or_constant(self) -> Column:
        given = [self.source is not None, self.constant is not None, self.derived, self.absent]
        if sum(given) != 1:
            raise ValueError("a column needs exactly one of 'source' (source column name), 'constant', 'derived: true'")
        if self.absent and self.required:
            raise ValueError("a column absent from a release cannot be required")
        return self


class Geometry(Strict):
    """Target geometry column: from the file's geometries, or a point from x/y (lon/lat) columns.

    The source CRS is read from the file unless `source_crs` is given (required with x/y columns).
    """

    column: str = "geom"
    type: Literal["Point", "MultiPoint", "MultiLineString", "MultiPolygon"]
    srid: int = 2154
    source_crs: str | None = None
    x: str | None = Field(default=None, description="source column of x or longitude")
    y: str | None = Field(default=None, description="source column of y or latitude")
    crs_column: str | None = Field(
        default=None, description="source column giving each row's EPSG code, when x/y are not all in one CRS "
                                  "(BPE 2025: EPSG, 2154 in metropolitan France, 5490, 2972, 2975, 4471 overseas); "
                                  "source_crs is then the CRS of rows where it is empty")
    description: str = "Geometry, EPSG:2154 (Lambert-93)"

    @field_validator("column")
    @classmethod
    def _col(cls, v: str) -> str:
        return _ident(v, "geometry column")

    @model_validator(mode="after")
    def _xy(self) -> Geometry:
        if (self.x is None) != (self.y is None):
            raise ValueError("give both 'x' and 'y' columns, or neither")
        if self.crs_column and not self.x:
            raise ValueError("crs_column goes with x/y columns (a file's geometries carry their CRS)")
        if self.x and not self.source_crs:
            raise ValueError("a point built from x/y columns needs 'source_crs' (e.g. EPSG:2154, EPSG:4326)")
        if self.x and self.type != "Point":
            raise ValueError("x/y columns make a 'Point' geometry")
        return self

    @property
    def from_columns(self) -> bool:
        return self.x is not None


class PartOf(Strict):
    """A table that is itself one partition of a shared store (`src.insee_qpv`, partitioned by dataset): the
    entry's table is attached to it, for the value of the entry's constant column `column`."""

    table: str
    column: str

    @field_validator("table", "column")
    @classmethod
    def _names(cls, v: str) -> str:
        return _ident(v, "part_of name")


class Target(Strict):
    """Where a source lands: `schema.table`, optionally one LIST partition of it; with `part_of`, the table is
    itself a partition of a shared store (created by a migration)."""

    schema_: Literal["ref", "src"] = Field(alias="schema")
    table: str
    partition: dict[str, Any] | None = None
    part_of: PartOf | None = None

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _ident(v, "table")

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.table}"

    @property
    def physical_table(self) -> str:
        """The table that is swapped: the partition table (`qpv_2015`) or the table itself."""
        if self.partition:
            (value,) = self.partition.values()
            return _ident(f"{self.table}_{value}".lower(), "partition table")
        return self.table


class Expectation(Strict):
    """One GX Core expectation: its class name in snake_case (as in GX docs) and its keyword arguments."""

    expectation: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("expectation")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^expect_[a-z0-9_]+$|^unexpected_rows(_expectation)?$", v):
            raise ValueError(f"{v!r} is not a GX expectation name (expect_…)")
        return "unexpected_rows_expectation" if v == "unexpected_rows" else v  # GX's class UnexpectedRowsExpectation


CODE_PATTERNS = {
    # building blocks of the suites: French codes, as text
    "insee_commune": r"^([0-9]{5}|2[AB][0-9]{3})$",
    "departement": r"^([0-9]{2}|2[AB]|97[0-9])$",
    "region": r"^[0-9]{2}$",
    "iris": r"^([0-9]{5}|2[AB][0-9]{3})[0-9]{4}$",
    "siren": r"^[0-9]{9}$",
}


class Check(Strict):
    """A reusable check of the project, expanded into GX expectations (keeps suites short).

    `insee_commune`, `departement`, `region`, `iris`, `siren`: code formats; `qpv`: a QPV code of the list
    `list` (a year of include/qpv_lists.yml), of any known list without; `rate`: 0–100; `count`: ≥ 0;
    `references`: every non-null value exists in `table`.`key`.
    """

    check: Literal["insee_commune", "departement", "region", "iris", "qpv", "siren", "rate", "count", "references"]
    column: str
    list_: int | None = Field(default=None, alias="list", description="qpv: the list's year (include/qpv_lists.yml)")
    table: str | None = None
    key: str | None = None
    mostly: float | None = Field(default=None, gt=0, le=1, description="share of rows that must pass")

    @model_validator(mode="after")
    def _refs(self) -> Check:
        _ident(self.column, "column")
        if self.list_ is not None and self.check != "qpv":
            raise ValueError("'list' goes with check: qpv")
        if self.check == "references":
            if not self.table or not re.match(r"^(ref|src)\.[a-z_][a-z0-9_]*$", self.table):
                raise ValueError("references needs table: ref.<table> or src.<table>")
            _ident(self.key or self.column, "key")
        return self


class RegionFilter(Strict):
    """Keep only rows of the deployment's regions, judged from one target column. `any`: a column mixing levels
    (INSEE's files by quartier: QPV, communes, EPCI, France): QPV and commune codes are judged by their
    département, other units (EPCI, France, all QPV) are kept as comparisons."""

    column: str
    level: Literal["departement", "commune", "qpv", "iris", "any"]


class CogTranslation(Strict):
    """The commune geography (COG year) a source's codes are on, translated at load time to the deployment's
    COG through INSEE's commune events (`ref.commune_mouvement`, qpvhub.ingest.cog)."""

    columns: list[str] = Field(description="target columns holding INSEE commune codes")
    year: int | None = Field(default=None, ge=1943, description="COG year of the file; default: its millésime")
    sample_year: int | None = Field(default=None, ge=1943, description="COG year of the bundled sample, if other")
    merged: Literal["attach", "aggregate"] = Field(
        default="attach",
        description="attach: rows keep their own key and point at the commune they merged into; aggregate: rows "
                    "of merged communes become one (counts summed, geometries unioned, other values the chief "
                    "town's) — for tables keyed by commune")
    rules: dict[str, Literal["sum", "first"]] = Field(
        default_factory=dict, description="how a column merges in aggregate mode, when its type does not say")


class InseePage(Strict):
    """An insee.fr page whose download is picked by file name at fetch time (qpvhub.ingest.locate): INSEE keeps a
    millésime's page and renames its files when it corrects them (`…_qp24_v2_csv.zip`)."""

    page: int = Field(gt=0, description="the page number, as in https://www.insee.fr/fr/statistiques/<page>")
    file: str = Field(description="the file's name, or a pattern with * ? [ ] (revenus_pauvrete_2021_qp24*csv.zip)")


class Quality(Strict):
    policy: Literal["block", "warn"] = "block"
    checks: list[Check] = Field(default_factory=list)
    expectations: list[Expectation] = Field(default_factory=list)
    min_rows: int = 1
    max_drop_ratio: float = Field(default=0.5, ge=0, le=1, description="fail when rows < (1-ratio) × last load")


class DataGouv(Strict):
    """A data.gouv.fr dataset whose current resource is picked at fetch time (qpvhub.ingest.locate)."""

    dataset: str = Field(description="dataset slug or id, as in https://www.data.gouv.fr/fr/datasets/<slug>/")
    resource: str = Field(description="resource id (UUID) or a regular expression on its title")
    format: str | None = Field(default=None, description="format the API must report (e.g. zip, csv)")

    @field_validator("resource")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"resource {v!r} is not a valid regular expression: {exc}") from None
        return v


RELEASE = "{release}"  # placeholder filled with the release of a run (constants, partition value)
FEED = "{feed}"  # placeholder filled with the feed of a run, for a collection of feeds
FEED_TITLE = "{feed_title}"  # … and with that feed's title (a network's name)


class Layout(Strict):
    """The columns of a span of releases of a series: where they differ from the entry's `columns`.

    `columns` maps a target column to its source column in these releases, or to null when the releases
    have no such column (it loads as NULL)."""

    releases: tuple[int, int | None] = Field(description="first and last release (null: up to now)")
    columns: dict[str, str | None] = Field(default_factory=dict)
    reader: dict[str, Any] = Field(default_factory=dict, description="reader options of these releases, over the "
                                                                     "entry's (e.g. the archive member's name)")
    cog_year: int | None = Field(default=None, ge=1943, description="COG year of these releases' commune codes, "
                                                                    "when not the entry's cog.year")
    note: str = ""

    def covers(self, release: int) -> bool:
        first, last = self.releases
        return first <= release and (last is None or release <= last)


class Series(Strict):
    """A statistics file published in yearly releases, each one kept as a partition of the target table
    (`target.partition: {release: "{release}"}`), loaded and swapped on its own."""

    column: str = "release"
    current: int | None = Field(default=None, description="the release a scheduled run loads (the newest)")
    samples: dict[int, str] = Field(default_factory=dict, description="release → bundled file under include/")
    layouts: list[Layout] = Field(min_length=1)

    def layout(self, release: int) -> Layout | None:
        return next((lay for lay in self.layouts if lay.covers(release)), None)


class Feed(Strict):
    """One feed of a collection (a GTFS network): its partition id, where it is, what it is."""

    id: str = Field(description="partition id: lower-case letters, digits, _ (e.g. star, sailcoop)")
    title: str
    publisher: str = ""
    url: str | None = None
    sample: str | None = Field(default=None, description="bundled file, relative to include/")
    licence: str = ""
    dataset: str | None = Field(default=None, description="its transport.data.gouv.fr dataset slug, if any: "
                                                          "discovery then keeps this id and title")

    @field_validator("id")
    @classmethod
    def _fid(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", v):
            raise ValueError(f"feed id {v!r}: lower-case letters, digits and _, at most 31 characters")
        return v


class Discovery(Strict):
    """Feeds found in transport.data.gouv.fr's catalogue (`/api/datasets`): public-transit datasets'
    available GTFS resources. Which ones serve the regions is known from their stops once read."""

    api: str = "https://transport.data.gouv.fr/api/datasets"
    types: list[str] = Field(default_factory=lambda: ["public-transit"])
    exclude: list[str] = Field(default_factory=list, description="dataset slugs or ids to leave out")


class PerDepartement(Strict):
    """One file per département of the deployment's regions, at a URL pattern (Géorisques' TRI deliveries):
    each a feed `dep_<code>`. A département the publisher has no file for (HTTP 404) is skipped with that
    reason; when every département is missing, the location itself is wrong and the runs fail."""

    url: str = Field(description="with {dep}, the département's COG code (35, 2A, 971)")
    title: str = "département {dep}"

    @field_validator("url")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if "{dep}" not in v:
            raise ValueError(f"per_departement.url {v!r} must contain {{dep}}")
        return v

    def feed(self, dep: str) -> Feed:
        return Feed(id=f"dep_{dep.lower()}", title=self.title.format(dep=dep), url=self.url.format(dep=dep))


class Collection(Strict):
    """Several files of one layout, each kept as a partition of the target (`target.partition:
    {feed_id: "{feed}"}`): every GTFS network of the regions in one table, loaded feed by feed; or one file
    per département (`per_departement`)."""

    column: str = "feed_id"
    feeds: list[Feed] = Field(default_factory=list, description="feeds listed by hand")
    discover: Discovery | None = None
    per_departement: PerDepartement | None = None

    @model_validator(mode="after")
    def _unique(self) -> Collection:
        ids = [f.id for f in self.feeds]
        if len(ids) != len(set(ids)):
            raise ValueError(f"feed ids must be unique: {sorted(ids)}")
        return self


def release_of(label: Any, source_id: str) -> int:
    """A release label as a year, or a clear error (`2019` yes; `2019b`, `19`, `latest` no)."""
    text = str(label).strip()
    if not re.fullmatch(r"(19|20)\d{2}", text):
        raise ConfigError(f"source {source_id}: release {label!r} is not a year (e.g. 2019)")
    return int(text)


class Source(Strict):
    """One catalogue entry: a dataset, where it is, how to read it, where it lands, how it is checked."""

    id: str
    title: str
    description: str = ""
    publisher: str
    licence: str
    landing_page: str | None = None
    url: str | None = Field(default=None, description="production URL (https, http, file, s3); a series' may "
                                                      "name {release}, filled with the release a run loads")
    datagouv: DataGouv | None = Field(default=None, description="or: a data.gouv.fr dataset resolved at fetch time")
    insee: InseePage | None = Field(default=None, description="or: an insee.fr page whose file is picked at fetch time")
    sample: str | None = Field(default=None, description="offline sample, relative to include/")
    sample_provenance: str | None = None
    sample_millesime: str | None = Field(default=None, description="the sample's millésime, when not the entry's")
    no_sample: str | None = Field(default=None, description="why no file is bundled (a shipped entry without one says)")
    format: Literal["geojson", "csv", "shapefile", "gpkg", "parquet", "gtfs", "vector", "xlsx", "insee"]
    reader: dict[str, Any] = Field(default_factory=dict)
    columns: dict[str, Column]
    row_filter: dict[str, list[str]] = Field(
        default_factory=dict, description="keep only rows whose source column has one of these values")
    row_exclude: dict[str, list[str]] = Field(
        default_factory=dict, description="leave out rows whose source column has one of these values (a "
                                          "publisher's total line, e.g. SIG Ville's `Ensemble`)")
    geometry: Geometry | None = None
    region_filter: RegionFilter | None = None
    keys: list[str] = Field(default_factory=list)
    target: Target
    transform: str | None = Field(default=None, description="SQL file under sql/transforms run on staging")
    depends_on: list[str] = Field(default_factory=list,
                                  description="sources whose tables the load reads (transform, COG translation)")
    schedule: str | None = "@weekly"
    millesime: str | None = None
    max_age_years: int | None = Field(default=None, ge=0, description="flag the data when its millésime is older")
    max_unchanged_days: int | None = Field(
        default=None, ge=1, description="flag the location when its file has not changed for longer than this")
    quality: Quality = Field(default_factory=Quality)
    cog: CogTranslation | None = Field(default=None,
                                       description="older commune geography, translated (qpvhub.ingest.cog)")
    tags: list[str] = Field(default_factory=list)
    series: Series | None = Field(default=None, description="yearly releases, each kept (see Series)")
    collection: Collection | None = Field(default=None, description="several feeds, each kept (see Collection)")
    release: int | None = Field(default=None, description="set by for_release(): the release this run loads")
    part: str | None = Field(default=None, description="set for one run: the partition it loads (release, feed)")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _ident(v, "source id")

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, Column]) -> dict[str, Column]:
        for name in v:
            _ident(name, "column")
        if not v:
            raise ValueError("at least one column is needed")
        return v

    @model_validator(mode="after")
    def _keys(self) -> Source:
        for key in self.keys:
            if key not in self.columns:
                raise ValueError(f"key {key!r} is not one of the columns")
        for c in self.quality.checks:
            if c.column not in self.columns:
                raise ValueError(f"quality check {c.check!r} names {c.column!r}, not one of the columns")
        if self.region_filter and self.region_filter.column not in self.columns:
            raise ValueError(f"region_filter column {self.region_filter.column!r} is not one of the columns")
        if self.target.partition:
            if len(self.target.partition) != 1:
                raise ValueError("target.partition must name exactly one column")
            (col,) = self.target.partition
            if col not in self.columns:
                raise ValueError(f"partition column {col!r} is not one of the columns")
        return self

    @model_validator(mode="after")
    def _part_of(self) -> Source:
        p = self.target.part_of
        if p is not None:
            col = self.columns.get(p.column)
            if col is None or col.constant is None:
                raise ValueError(f"target.part_of: the column {p.column!r} must be a constant of the entry (the "
                                 "value its table holds in the shared store)")
        return self

    @model_validator(mode="after")
    def _derived_needs_transform(self) -> Source:
        derived = [n for n, c in self.columns.items() if c.derived]
        if derived and not self.transform:
            raise ValueError(f"columns {derived} are derived but no 'transform' SQL file is given")
        if self.transform and not re.match(r"^[a-z0-9_]+\.sql$", self.transform):
            raise ValueError("transform must be a file name under sql/transforms, e.g. qpv_2015.sql")
        return self

    @model_validator(mode="after")
    def _somewhere(self) -> Source:
        if self.collection:  # each feed says where it is; discovery finds the others
            return self
        given = [k for k in ("url", "datagouv", "insee") if getattr(self, k)]
        if not given and not self.sample:
            raise ValueError("give 'url', 'datagouv' or 'insee' (production) and 'sample' (bundled file)")
        if len(given) > 1:
            raise ValueError(f"give one production location, not {' and '.join(given)}")
        if self.url and RELEASE in self.url and not (self.series and self.series.current is not None):
            raise ValueError("url names {release}: only a series' url can, and it needs series.current "
                             "(the release a schedule loads)")
        if self.no_sample and (self.sample or (self.series and self.series.samples)):
            raise ValueError("'no_sample' says no file is bundled, but one is")
        return self

    @model_validator(mode="after")
    def _cog(self) -> Source:
        if not self.cog:
            return self
        if "cog_mouvements" not in self.depends_on:
            raise ValueError("cog: the codes are translated through cog_mouvements: add it to depends_on")
        unknown = [c for c in self.cog.columns + list(self.cog.rules) if c not in self.columns]
        if unknown:
            raise ValueError(f"cog names columns that are not declared: {unknown}")
        if self.cog.year is None and not (self.millesime or "").isdigit():
            raise ValueError("cog.year is needed when the millésime is not a year")
        if self.cog.merged == "aggregate":
            if len(self.cog.columns) != 1 or self.cog.columns[0] not in self.keys:
                raise ValueError("cog.merged: aggregate groups rows by their key: give one column, one of 'keys'")
            geom = self.geometry.column if self.geometry else None
            vague = [n for n, c in self.columns.items()
                     if c.type in ("double", "numeric") and n not in self.cog.rules and n != geom]
            if vague:
                raise ValueError(f"cog.merged: aggregate cannot tell how {vague} merge (a rate cannot be summed): "
                                 "say it in cog.rules (sum or first)")
        return self

    def _partition_column(self, kind: str, column: str, placeholder: str) -> None:
        col = self.columns.get(column)
        if col is None or col.constant != placeholder:
            raise ValueError(f"a {kind} needs the column {column!r} with constant: \"{placeholder}\"")
        if self.target.partition != {column: placeholder}:
            raise ValueError(f"a {kind} is kept per partition: target.partition: {{{column}: \"{placeholder}\"}}")

    @model_validator(mode="after")
    def _collection(self) -> Source:
        if self.collection:
            if self.series:
                raise ValueError("an entry is a series or a collection, not both")
            self._partition_column("collection", self.collection.column, FEED)
        return self

    @model_validator(mode="after")
    def _series(self) -> Source:
        if not self.series:
            return self
        self._partition_column("series", self.series.column, RELEASE)
        for lay in self.series.layouts:
            unknown = sorted(set(lay.columns) - set(self.columns))
            if unknown:
                raise ValueError(f"series layout {list(lay.releases)} names columns that are not declared: {unknown}")
            if lay.releases[1] is not None and lay.releases[1] < lay.releases[0]:
                raise ValueError(f"series layout {list(lay.releases)}: the last release is before the first")
            if lay.cog_year is not None and self.cog is None:
                raise ValueError(f"series layout {list(lay.releases)}: cog_year without the entry's cog")
        spans = sorted(lay.releases for lay in self.series.layouts)
        for (_, last), (first, _) in itertools.pairwise(spans):
            if last is None or last >= first:
                raise ValueError(f"series layouts overlap: {spans}")
        return self

    def for_release(self, label: Any) -> Source:
        """This entry for one release of its series: the release's layout (columns, reader options, COG year)
        applied, `{release}` filled in."""
        if not self.series:
            return self
        release = release_of(label, self.id)
        layout = self.series.layout(release)
        if layout is None:
            spans = ", ".join(f"{a}–{b or 'now'}" for a, b in (lay.releases for lay in self.series.layouts))
            raise ConfigError(f"source {self.id}: no layout declared for release {release} (layouts: {spans}); "
                              f"add one in include/sources/{self.id}.yml")
        columns = {}
        for name, col in self.columns.items():
            if name in layout.columns:
                src = layout.columns[name]
                col = col.model_copy(update={"source": src, "absent": src is None,
                                             "required": col.required and src is not None})
            columns[name] = col
        update: dict[str, Any] = {"columns": columns, "reader": {**self.reader, **layout.reader}}
        if layout.cog_year is not None and self.cog is not None:
            update["cog"] = self.cog.model_copy(update={"year": layout.cog_year})
        if self.url:
            update["url"] = self.url.replace(RELEASE, str(release))
        return self.model_copy(update=update)._as_part(
            self.series.column, release, release=release, millesime=str(release),
            sample=self.series.samples.get(release, self.sample if release == self.series.current else None))

    def _as_part(self, column: str, value: Any, **updates: Any) -> Source:
        """This entry for one partition (a release, a feed): the partition column's constant and the target
        partition set to `value` — the one mechanism behind series and collections."""
        columns = {n: (c.model_copy(update={"constant": value}) if n == column else c) for n, c in self.columns.items()}
        return self.model_copy(update={"columns": columns, "part": str(value),
                                       "target": self.target.model_copy(update={"partition": {column: value}}),
                                       **updates})

    def feeds(self) -> list[Feed]:
        """The feeds listed by hand (discovered ones come from qpvhub.ingest.locate.discover_feeds at run time)."""
        return list(self.collection.feeds) if self.collection else []

    def for_feed(self, feed: Feed) -> Source:
        """This entry for one feed of its collection: its partition, location, sample and title."""
        if not self.collection:
            raise ConfigError(f"source {self.id} is not a collection of feeds")
        one = self._as_part(self.collection.column, feed.id, url=feed.url, datagouv=None, insee=None,
                            sample=feed.sample, title=f"{self.title} — {feed.title}",
                            publisher=feed.publisher or self.publisher, licence=feed.licence or self.licence)
        columns = {n: (c.model_copy(update={"constant": feed.title}) if c.constant == FEED_TITLE else c)
                   for n, c in one.columns.items()}
        return one.model_copy(update={"columns": columns})

    def as_sample(self) -> Source:
        """This entry reading its bundled sample: the sample's millésime and COG year where they differ."""
        update: dict[str, Any] = {}
        if self.sample_millesime:
            update["millesime"] = self.sample_millesime
        if self.cog and self.cog.sample_year:
            update["cog"] = self.cog.model_copy(update={"year": self.cog.sample_year})
        return self.model_copy(update=update) if update else self

    @property
    def sample_is_fixture(self) -> bool:
        """Every bundled file is a FIXTURE (the project labels such files so in their name and PROVENANCE.md): their
        figures or positions are invented — fit for tests, never for the demo's products."""
        samples = [s for s in [self.sample, *(self.series.samples.values() if self.series else []),
                               *(f.sample for f in (self.collection.feeds if self.collection else []))] if s]
        return bool(samples) and all("FIXTURE" in s for s in samples)

    def file_columns(self) -> list[str]:
        """The file's columns a load reads (mapped columns, row filters, x/y): what must be in the file,
        what the reader converts, what `sources check` looks for."""
        names = [c.source for c in self.columns.values() if c.source] + list(self.row_filter) + list(self.row_exclude)
        if self.geometry and self.geometry.from_columns:
            names += [self.geometry.x, self.geometry.y, self.geometry.crs_column]
        return list(dict.fromkeys(n for n in names if n))

    def cog_year(self) -> int | None:
        """The COG year of the file this entry reads (declared, else its millésime); None without `cog`."""
        if not self.cog:
            return None
        return self.cog.year if self.cog.year is not None else int(self.millesime or 0)

    @property
    def production(self) -> str | None:
        """The production location as one line: the URL, `datagouv:<dataset>/<resource>` or `insee:<page>/<file>`."""
        if self.url:
            return self.url
        if self.datagouv:
            return f"datagouv:{self.datagouv.dataset}/{self.datagouv.resource}"
        if self.insee:
            return f"insee:{self.insee.page}/{self.insee.file}"
        if self.collection and self.collection.discover:
            return f"{self.collection.discover.api} ({', '.join(self.collection.discover.types)})"
        if self.collection and self.collection.per_departement:
            return self.collection.per_departement.url
        if self.collection and any(f.url for f in self.collection.feeds):
            return ", ".join(f.url for f in self.collection.feeds if f.url)
        return None

    @property
    def asset_uri(self) -> str:
        return f"qpvhub://{self.target.schema_}/{self.target.table}"

    @property
    def partitioning(self) -> Partitioning:
        """How the entry's target is partitioned: the one mechanism behind QPV lists, releases and feeds."""
        if self.series:
            return Partitioning("release", self.series.column)
        if self.collection:
            return Partitioning("feed", self.collection.column)
        if self.target.partition and not self.part:
            ((column, value),) = self.target.partition.items()
            return Partitioning("static", column, value)
        return Partitioning("none")


class Partitioning(NamedTuple):
    """`static`: one fixed partition of a shared table (a QPV list's perimeters in ref.qpv); `release`: one
    partition per yearly release (a series); `feed`: one per file of a collection; `none`: a whole table."""

    kind: Literal["none", "static", "release", "feed"]
    column: str | None = None
    value: Any = None
