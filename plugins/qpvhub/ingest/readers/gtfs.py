"""GTFS feeds (zip): one row per stop with its departures on each day of a reference week.

The reference week is `reader.reference_week` (a Monday, YYYY-MM-DD) or, by default, the Monday–
Sunday week inside the feed's validity with the most active service-days (a "typical" week, not a
holiday one). Active services per day come from calendar.txt and calendar_dates.txt (exceptions 1
add, 2 remove). stop_times.txt is streamed in chunks: memory does not grow with its size. A
departure is a stop_time whose pickup_type is not 1 (no pickup), so the last stop of a trip counts
only when passengers may board there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd

from qpvhub.ingest.archive import safe_extract
from qpvhub.ingest.readers.base import Reader, ReaderOutput, sniff_not_data

REQUIRED = ("stops.txt", "trips.txt", "stop_times.txt")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
OUT_COLUMNS = [f"departures_{d[:3]}" for d in DAYS] + ["departures_weekday_avg", "reference_week"]


# optional fields of stops.txt (GTFS reference): absent from a file means empty for every stop
OPTIONAL_STOP_FIELDS = ("stop_code", "stop_desc", "zone_id", "stop_url", "location_type", "parent_station",
                        "stop_timezone", "wheelchair_boarding", "level_id", "platform_code")


def _active_counts(cal: pd.DataFrame, dates: pd.DataFrame, first: dt.date, n_days: int) -> np.ndarray:
    """How many service_ids run on each of the `n_days` days from `first`: a service × day matrix from calendar.txt
    (weekday flag and validity), then calendar_dates.txt's additions and removals (a removal wins) — the week
    search's count at once, where a pandas filter per day took 0.4 s of a small feed's 0.5 s read."""
    days = pd.date_range(first, periods=n_days, freq="D")
    ymd = days.strftime("%Y%m%d").to_numpy(dtype=object)
    services = pd.Index(pd.concat([cal["service_id"], dates["service_id"]]).dropna().unique())
    on = np.zeros((len(services), n_days), dtype=bool)
    if len(cal):
        flags = np.stack([cal[d].to_numpy() == "1" for d in DAYS], axis=1)[:, days.weekday]  # rows × days
        # a missing bound never matches (as pandas compares NaN): "~" sorts after digits, "" before
        valid = (cal["start_date"].fillna("~").to_numpy(dtype=object)[:, None] <= ymd) & \
            (cal["end_date"].fillna("").to_numpy(dtype=object)[:, None] >= ymd)
        row = services.get_indexer(cal["service_id"])
        np.logical_or.at(on, row[row >= 0], (flags & valid)[row >= 0])
    if len(dates):
        col = pd.Index(ymd).get_indexer(dates["date"])
        row = services.get_indexer(dates["service_id"])
        inside = (col >= 0) & (row >= 0)
        for kind, value in (("1", True), ("2", False)):
            pick = inside & (dates["exception_type"].to_numpy() == kind)
            on[row[pick], col[pick]] = value
    return on.sum(axis=0)


class GtfsReader(Reader):
    format = "gtfs"
    expected = "a GTFS feed (zip)"

    def _read(self, name: str, **kw) -> pd.DataFrame:
        try:
            return pd.read_csv(self.dir / name, dtype=str, keep_default_na=False, na_values=[""],
                               encoding="utf-8-sig", **kw)
        except (pd.errors.ParserError, ValueError) as exc:
            raise self.error(f"{name}: {exc}") from None

    def open(self) -> ReaderOutput:
        sniff_not_data(self.path, self.source, self.expected)
        self.dir = self.path.parent / (self.path.stem + "__unzipped")
        files = safe_extract(self.path, self.dir, source=self.source)
        names = {p.relative_to(self.dir).as_posix() for p in files}
        if not names & set(REQUIRED) and len({p.parent for p in files}) == 1 and files:
            self.dir = files[0].parent  # feed zipped inside a folder
            names = {p.name for p in files}
        missing = [n for n in REQUIRED if n not in names]
        if not ({"calendar.txt", "calendar_dates.txt"} & names):
            missing.append("calendar.txt or calendar_dates.txt")
        if missing:
            raise self.error(f"not a complete GTFS feed: missing {', '.join(missing)}")
        self.has_calendar = "calendar.txt" in names
        self.has_dates = "calendar_dates.txt" in names
        header = pd.read_csv(self.dir / "stops.txt", nrows=0, encoding="utf-8-sig").columns.tolist()
        for col in ("stop_id", "stop_lat", "stop_lon"):
            if col not in header:
                raise self.error(f"stops.txt has no {col} column", column=col)
        # GTFS: an optional field may be left out of the file; it then reads as empty, as the spec says
        self.optional = [c for c in OPTIONAL_STOP_FIELDS if c not in header]
        return ReaderOutput(columns=header + self.optional + OUT_COLUMNS, crs="EPSG:4326")

    def _active_services(self) -> tuple[dt.date, list[set[str]]]:
        """The reference week's Monday and, for each day, the set of active service_ids."""
        cal = self._read("calendar.txt") if self.has_calendar else pd.DataFrame(
            columns=["service_id", *DAYS, "start_date", "end_date"])
        dates = self._read("calendar_dates.txt") if self.has_dates else pd.DataFrame(
            columns=["service_id", "date", "exception_type"])

        def parse(s: str) -> dt.date:
            return dt.datetime.strptime(s, "%Y%m%d").date()

        def active_on(day: dt.date) -> set[str]:
            ymd = day.strftime("%Y%m%d")
            wd = DAYS[day.weekday()]
            on = set(cal.loc[(cal[wd] == "1") & (cal["start_date"] <= ymd) & (cal["end_date"] >= ymd),
                             "service_id"])
            ex = dates[dates["date"] == ymd]
            on |= set(ex.loc[ex["exception_type"] == "1", "service_id"])
            on -= set(ex.loc[ex["exception_type"] == "2", "service_id"])
            return on

        if cal.empty and dates.empty:
            raise self.error("calendar.txt and calendar_dates.txt define no service: the feed runs no trip")
        bounds_all = [parse(x) for x in [*cal["start_date"], *cal["end_date"], *dates["date"]] if x]
        if bounds_all:
            end = max(bounds_all)
            info = self.dir / "feed_info.txt"
            if info.exists():  # the publisher's own statement of validity wins over the calendar's span
                fi = self._read("feed_info.txt")
                if "feed_end_date" in fi and fi["feed_end_date"].notna().any():
                    end = parse(str(fi["feed_end_date"].dropna().iloc[0]))
            self.period = (min(bounds_all), end)
        ref = self.options.get("reference_week")
        if ref:
            monday = dt.date.fromisoformat(str(ref))
            if monday.weekday() != 0:
                raise self.error(f"reader.reference_week {ref} is not a Monday")
        else:
            bounds = [parse(x) for x in [*cal["start_date"], *cal["end_date"], *dates["date"]] if x]
            if not bounds:
                raise self.error("calendar.txt and calendar_dates.txt define no date")
            start, end = min(bounds), min(max(bounds), min(bounds) + dt.timedelta(days=400))
            first = start + dt.timedelta(days=(7 - start.weekday()) % 7)
            weeks = ((end - first).days + 1) // 7
            if weeks < 1:
                raise self.error(f"the feed is valid {start}–{end}: no full Monday–Sunday week to count on")
            per_day = _active_counts(cal, dates, first, weeks * 7)
            monday = first + dt.timedelta(days=7 * int(np.argmax(per_day.reshape(weeks, 7).sum(axis=1))))
        return monday, [active_on(monday + dt.timedelta(days=i)) for i in range(7)]

    def batches(self) -> Iterator[pd.DataFrame]:
        if not hasattr(self, "dir"):
            self.open()
        monday, active = self._active_services()
        trips = self._read("trips.txt", usecols=["trip_id", "service_id"])
        # one bit per day of the reference week on which the trip runs
        mask = np.zeros(len(trips), dtype=np.int64)
        for i, services in enumerate(active):
            mask |= trips["service_id"].isin(services).to_numpy().astype(np.int64) << i
        trip_mask = pd.Series(mask, index=trips["trip_id"].to_numpy())
        counts: pd.DataFrame | None = None
        header = pd.read_csv(self.dir / "stop_times.txt", nrows=0, encoding="utf-8-sig").columns
        usecols = ["trip_id", "stop_id"] + [c for c in ("departure_time", "pickup_type") if c in header]
        line = 1
        try:
            for chunk in pd.read_csv(self.dir / "stop_times.txt", dtype=str, usecols=usecols, encoding="utf-8-sig",
                                     keep_default_na=False, chunksize=max(self.batch_size, 200_000)):
                if "departure_time" in chunk:  # HH:MM:SS, hours past 24 for trips after midnight
                    t = chunk["departure_time"].str.strip()
                    bad = (t != "") & ~t.str.fullmatch(r"\d{1,3}:[0-5]\d:[0-5]\d")
                    if bad.any():
                        k = int(np.argmax(bad.to_numpy()))
                        raise self.error(f"stop_times.txt: departure_time {chunk['departure_time'].iloc[k]!r} is "
                                         "not a GTFS time (HH:MM:SS, hours may pass 24)", line=line + 1 + k,
                                         column="departure_time")
                line += len(chunk)
                if "pickup_type" in chunk:
                    chunk = chunk[chunk["pickup_type"] != "1"]
                m = trip_mask.reindex(chunk["trip_id"].to_numpy()).fillna(0).astype(np.int64).to_numpy()
                per_day = pd.DataFrame({f"departures_{d[:3]}": (m >> i) & 1 for i, d in enumerate(DAYS)})
                per_day["stop_id"] = chunk["stop_id"].to_numpy()
                part = per_day.groupby("stop_id").sum()
                counts = part if counts is None else counts.add(part, fill_value=0)
        except (pd.errors.ParserError, ValueError) as exc:
            raise self.error(f"stop_times.txt: {exc}", line=line) from None
        stops = self._read("stops.txt")
        for c in getattr(self, "optional", []):
            stops[c] = None
        day_cols = [f"departures_{d[:3]}" for d in DAYS]
        if counts is None:
            counts = pd.DataFrame(columns=day_cols)
        stops = stops.merge(counts.astype("int64"), how="left", left_on="stop_id", right_index=True)
        stops[day_cols] = stops[day_cols].fillna(0).astype("int64")
        stops["departures_weekday_avg"] = stops[day_cols[:5]].mean(axis=1).round(1)
        stops["reference_week"] = monday.isoformat()
        for start in range(0, len(stops), self.batch_size):
            df = stops.iloc[start:start + self.batch_size].copy()
            df["__feature"] = range(start + 2, start + 2 + len(df))  # line in stops.txt
            yield df

