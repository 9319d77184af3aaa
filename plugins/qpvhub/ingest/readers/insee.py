"""INSEE's archives of statistics by quartier, read through their own variable dictionary.

An archive of « Données sur les quartiers » holds one or more data files (`CODGEO;LIBGEO;<variables>`, one per
geographic level: the QPV, their communes, the communes outside their QPV, EPCI, all QPV, France) and a
`meta_…` dictionary (`COD_VAR;LIB_VAR;…`, a line per variable or per modality). Every variable of every data
file is read — no column list per file in the catalogue — as long rows: level, code, name, variable, its
label from the dictionary, the value (a number, INSEE's decimal comma read) and its status (INSEE's markers
`s`, `ns`, `nd`, `so`, or `blank`: never a number). A variable the dictionary does not list is an error, a
variable added by a new release loads as any other, and a variable the indicators need (`reader.requires`,
names or patterns such as `DISP_TP60_A*` so that a release renaming its year suffix needs no change) missing
from the release fails naming it. A cell that is neither a number nor a marker names its member, line and
variable.

Options: `data` (pattern of the data members, default every .csv but the dictionary), `meta` (pattern of
the dictionary, default `meta_*`), `levels` (member name pattern → level, first match wins; default the
suffixes below), `ids` (identifier columns, default CODGEO and LIBGEO), `requires`, `sep`, `encoding`; `release`
and `dataset` are given by the load, for its messages.

What is ASSUMED (no real file of the 2024 list could be read offline; include/sample_data/PROVENANCE.md):
the dictionary's column names, the level suffixes, the markers; `qpvhub sources check` compares a real file
with them on its first day online.
"""

from __future__ import annotations

import csv
import fnmatch
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from qpvhub.ingest.archive import safe_extract
from qpvhub.ingest.readers.base import Reader, ReaderOutput, sniff_not_data

OUTPUT = ["__level", "__code", "__name", "__variable", "__label", "__value", "__status"]
LEVELS = [("*_QP.*", "qpv"), ("*_HQP.*", "commune_hors_qpv"), ("*_COM.*", "commune"),
          ("*_EPCI.*", "epci"), ("*_ENSQP.*", "ensemble_qpv"), ("*_FR*.*", "france"), ("*_FE.*", "france")]
MARKERS = ("s", "ns", "nd", "so")
CODE_COLUMNS = ("COD_VAR", "CODE_VAR", "VARIABLE", "VAR", "NOM_VAR")
LABEL_COLUMNS = ("LIB_VAR", "LIB_VAR_LONG", "LIBELLE", "LIBELLE_VAR", "INTITULE")


def _encoding(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1252"


def _sep(line: str) -> str:
    return max((";", ",", "\t", "|"), key=line.count)


def read_dictionary(path: Path) -> dict[str, str]:
    """Variable code → label from a `meta_…` file (its first label when it lists the modalities too)."""
    raw = path.read_bytes()
    text = raw.decode(_encoding(raw))
    lines = text.splitlines()
    if not lines:
        return {}
    rows = list(csv.DictReader(io.StringIO(text), delimiter=_sep(lines[0])))
    fields = [f.strip().upper() for f in next(csv.reader([lines[0]], delimiter=_sep(lines[0])))]  # BOM: decoded
    code = next((c for c in CODE_COLUMNS if c in fields), None)
    label = next((c for c in LABEL_COLUMNS if c in fields), None)
    if code is None:
        raise ValueError(f"no variable column ({' or '.join(CODE_COLUMNS)}) in its header {fields}")
    out: dict[str, str] = {}
    for row in rows:
        norm = {k.strip().upper(): (v or "").strip() for k, v in row.items() if k}
        var = norm[code]
        if var and var not in out:
            out[var] = norm[label] if label else ""
    return out


class InseeReader(Reader):
    format = "insee"
    expected = "an INSEE archive of statistics by quartier (data files and their meta_ dictionary)"

    def open(self) -> ReaderOutput:
        sniff_not_data(self.path, self.source, self.expected)
        with self.path.open("rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise self.error("not a ZIP archive: INSEE ships its files by quartier in one with their dictionary")
        dest = self.path.parent / (self.path.stem + "__unzipped")
        files = safe_extract(self.path, dest, source=self.source)
        names = {p: p.relative_to(dest).as_posix() for p in files}
        meta_pattern = str(self.options.get("meta", "meta_*"))
        metas = [p for p, n in names.items() if fnmatch.fnmatch(n.rsplit("/", 1)[-1].lower(), meta_pattern.lower())]
        if len(metas) != 1:
            found_metas = sorted(n for p, n in names.items() if p in metas) or "none"
            raise self.error(f"expected one dictionary {meta_pattern!r} in the archive, found {found_metas} among "
                             f"{sorted(names.values())}")
        self.meta = metas[0]
        try:
            self.dictionary = read_dictionary(self.meta)
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise self.error(f"dictionary {self.meta.name}: {exc}") from None
        data_pattern = str(self.options.get("data", "*.csv"))
        self.data = sorted(p for p, n in names.items() if p != self.meta
                           and fnmatch.fnmatch(n.rsplit("/", 1)[-1].lower(), data_pattern.lower())
                           and p.suffix.lower() in (".csv", ".txt"))
        if not self.data:
            raise self.error(f"no data file {data_pattern!r} beside the dictionary among {sorted(names.values())}")
        ids = [c.upper() for c in self.options.get("ids", ["CODGEO", "LIBGEO"])]
        self.headers: dict[Path, list[str]] = {}
        self.levels: dict[Path, str] = {}
        found: set[str] = set()
        for path in self.data:
            raw = path.read_bytes()[: 1 << 16]
            first = raw.decode(_encoding(raw), errors="replace").splitlines()[0] if raw.strip() else ""
            header = [h.strip() for h in next(csv.reader([first], delimiter=self.options.get("sep") or _sep(first)))]
            while header and header[-1] == "":
                header.pop()
            if not header or header[0].upper() != ids[0]:  # a BOM is gone with the decoding
                raise self.error(f"data file {path.name}: its first column is {header[:1]}, not {ids[0]}", line=1)
            unknown = [h for h in header if h.upper() not in ids and h not in self.dictionary]
            if unknown:
                raise self.error(f"data file {path.name}: variable(s) {unknown[:10]} not in the dictionary "
                                 f"{self.meta.name}: the archive is inconsistent", line=1, column=unknown[0])
            self.headers[path] = header
            self.levels[path] = self._level(path.name)
            found |= {h for h in header if h.upper() not in ids}
        self.ids = ids
        release = self.options.get("release")
        missing = [v for v in self.options.get("requires", []) if not fnmatch.filter(found, v)]
        if missing:
            where = "".join([f"dataset {self.options['dataset']}, " if self.options.get("dataset") else "",
                             f"release {release}: " if release is not None else ""])
            raise self.error(f"{where}variable(s) {missing} missing from the data files (the indicators need them; "
                             f"the dictionary lists {len(self.dictionary)} variables): a new release renamed them? "
                             "declare the new names in the entry (reader.requires and the indicator SQL)",
                             column=missing[0])
        self.variables = sorted(found)
        return ReaderOutput(columns=list(OUTPUT), crs=None,
                            extra={"dictionary": self.meta.name, "variables": len(found),
                                   "files": {p.name: self.levels[p] for p in self.data}})

    def _level(self, name: str) -> str:
        rules = [(k, v) for k, v in (self.options.get("levels") or {}).items()] or LEVELS
        for pattern, level in rules:
            if fnmatch.fnmatch(name.lower(), pattern.lower()):
                return level
        raise self.error(f"data file {name}: no level matches its name (levels: {[p for p, _ in rules]})")

    def batches(self) -> Iterator[pd.DataFrame]:
        if not hasattr(self, "headers"):
            self.open()
        markers = {m.lower() for m in self.options.get("markers", MARKERS)}
        for path in self.data:
            header = self.headers[path]
            raw = path.read_bytes()
            enc = self.options.get("encoding") or _encoding(raw[: 1 << 16])
            text = raw.decode(enc)
            sep = self.options.get("sep") or _sep(text.split("\n", 1)[0])
            frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, header=0,
                                names=header, usecols=range(len(header)), chunksize=self.batch_size)
            line = 1
            for chunk in frame:
                chunk.insert(0, "__line", range(line + 1, line + 1 + len(chunk)))
                line += len(chunk)
                yield self._long(chunk, path, markers)

    def _long(self, chunk: pd.DataFrame, path: Path, markers: set[str]) -> pd.DataFrame:
        """One wide block of a data file as long rows, a value's status kept beside it."""
        header = self.headers[path]
        code_col = header[0]
        name_col = next((h for h in header[1:] if h.upper() in self.ids[1:2]), None)
        ids = [h for h in header if h.upper() in self.ids]
        long = chunk.melt(id_vars=["__line", *ids], var_name="__variable",
                          value_name="__raw")  # every other column is a variable (open checked each)
        cell = long["__raw"].str.strip()
        lowered = cell.str.lower()
        status = pd.Series(None, index=long.index, dtype=object)
        status = status.mask(lowered.isin(markers), lowered).mask(cell.eq(""), "blank")
        out = pd.DataFrame({
            "__level": self.levels[path],
            "__code": long[code_col].str.strip(),
            "__name": long[name_col].str.strip() if name_col else None,
            "__variable": long["__variable"],
            "__label": long["__variable"].map(self.dictionary),
            "__value": self._numbers(cell.where(status.isna(), None), long, path),
            "__status": status,
            "__feature": long["__line"].to_numpy(),
        })
        return out.reset_index(drop=True)

    def _numbers(self, cells: pd.Series, long: pd.DataFrame, path: Path) -> pd.Series:
        """Released cells as numbers (INSEE's decimal comma, no thousands separator); a cell that is neither a
        number nor a marker is an error naming the member, its line and the variable."""
        text = cells.str.replace(",", ".")
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = cells.notna() & ~np.isfinite(numbers)  # `inf`, `nan` are not figures either
        if bad.any():
            i = bad.to_numpy().nonzero()[0][0]
            raise self.error(f"data file {path.name}: {cells.iloc[i]!r} is neither a number nor one of INSEE's "
                             f"markers ({', '.join(MARKERS)})", line=int(long["__line"].iloc[i]),
                             column=str(long["__variable"].iloc[i]))
        return numbers
