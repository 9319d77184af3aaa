"""Excel workbooks as INSEE ships its references (e.g. `reference_IRIS_geo2024.zip`: one .xlsx, sheet
`Emboitements_IRIS`, a few title lines, the header on row 6): one sheet read in streaming mode.

Options: `member` (the .xlsx inside a ZIP), `sheet` (default: the first), `header_row` (1-based, default 1).
Every cell is read as text (codes keep their leading zeros); `__feature` is the row number in the sheet.
A workbook is a ZIP of XML: the archives' budget applies to it before openpyxl reads a byte (a small file
holding a huge cell is refused by its expansion; openpyxl itself cuts a cell at Excel's 32,767 characters), XML
entities are refused (defusedxml), and whatever a damaged workbook raises is an error naming the file and row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pandas as pd

from qpvhub.ingest.archive import check_zip, extract_members
from qpvhub.ingest.readers.base import Reader, ReaderOutput, sniff_not_data


def _text(v) -> str | None:
    """A cell as the text a CSV would carry: integers without `.0`, dates in ISO, blanks as None."""
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dt.datetime | dt.date):
        return v.date().isoformat() if isinstance(v, dt.datetime) else v.isoformat()
    text = str(v).strip()
    return text or None


class XlsxReader(Reader):
    format = "xlsx"
    expected = "an Excel workbook (.xlsx)"

    def _unzip(self) -> None:
        """INSEE serves the workbook in a ZIP: the one .xlsx inside, or `reader.member`."""
        with self.path.open("rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":
            raise self.error("not an .xlsx workbook nor a ZIP holding one")
        import zipfile

        check_zip(self.path, source=self.source, what="workbook or archive")
        with zipfile.ZipFile(self.path) as z:
            if "[Content_Types].xml" in z.namelist():  # the workbook itself (an .xlsx is a ZIP too)
                return
        member = self.options.get("member")
        books, files, _ = extract_members(self.path, source=self.source, suffixes=(".xlsx",), member=member)
        if len(books) != 1:
            raise self.error(f"expected one .xlsx in the archive{' named ' + member if member else ''}, "
                             f"found {sorted(p.name for p in files)}")
        self.path = books[0]
        check_zip(self.path, source=self.source, what="workbook")  # the workbook inside is a ZIP too

    def _sheet(self):
        import openpyxl

        try:
            self.book = openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises several kinds on a damaged workbook
            raise self.error(f"cannot open the workbook: {type(exc).__name__}: {exc}") from None
        name = self.options.get("sheet")
        if name and name not in self.book.sheetnames:
            raise self.error(f"no sheet {name!r} in the workbook (sheets: {self.book.sheetnames})")
        return self.book[name] if name else self.book.worksheets[0]

    def open(self) -> ReaderOutput:
        sniff_not_data(self.path, self.source, self.expected)
        self._unzip()
        sheet = self._sheet()
        self.header_row = int(self.options.get("header_row", 1))
        rows = sheet.iter_rows(min_row=self.header_row, max_row=self.header_row, values_only=True)
        try:
            header = [(_text(v) or "") for v in next(rows, ())]
        except Exception as exc:  # a damaged or hostile sheet (XML entities, truncated XML): one clear error
            raise self.error(f"cannot read the sheet {sheet.title!r}: {type(exc).__name__}: {exc}",
                             line=self.header_row) from None
        while header and header[-1] == "":
            header.pop()
        if not header:
            raise self.error(f"row {self.header_row} of sheet {sheet.title!r} is empty: wrong header_row?",
                             line=self.header_row)
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise self.error(f"duplicated column names {dup}", line=self.header_row)
        self.header = header
        self.sheet_title = sheet.title
        self.book.close()
        return ReaderOutput(columns=header, crs=None, extra={"sheet": sheet.title})

    def batches(self) -> Iterator[pd.DataFrame]:
        if not hasattr(self, "header"):
            self.open()
        sheet = self._sheet()
        n = len(self.header)
        buf: list[list] = []
        lines: list[int] = []
        row_no = self.header_row
        try:
            rows = sheet.iter_rows(min_row=self.header_row + 1, values_only=True)
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except Exception as exc:  # damaged or hostile XML after the header: the row it stopped after
                    raise self.error(f"cannot read the sheet {self.sheet_title!r} after row {row_no}: "
                                     f"{type(exc).__name__}: {exc}", line=row_no + 1) from None
                row_no += 1
                cells = [_text(v) for v in row[:n]] + [None] * max(0, n - len(row))
                if all(c is None for c in cells):
                    continue  # blank lines (footnotes follow some INSEE tables)
                buf.append(cells)
                lines.append(row_no)
                if len(buf) >= self.batch_size:
                    yield self._frame(buf, lines)
                    buf, lines = [], []
            if buf:
                yield self._frame(buf, lines)
        finally:
            self.book.close()

    def _frame(self, rows: list[list], lines: list[int]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=self.header, dtype="string")
        df["__feature"] = lines
        return df
