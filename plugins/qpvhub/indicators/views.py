"""The analysts' views of the mart: `mart.qpv_profile` (one column per indicator), one `mart.theme_<theme>`
view per theme with its commune comparisons, their `_series` history views, `mart.qpv_networks`; all commented."""

from __future__ import annotations

import psycopg
from psycopg import sql

from qpvhub.indicators.families import SCOPE_SUFFIX, theme_view_name

# The QPV's identity, as ref.qpv holds it: the first columns of every view (the analyst guide's promise: every
# column an analyst reads says what it is)
IDENTITY_COLUMNS = {
    "code_qp": "QPV code (QP… on the 2015 list, QN… on the 2024 list)",
    "generation": "QPV list (its year: 2015 or 2024)", "lib_qp": "QPV name",
    "insee_com": "INSEE code of the QPV's main commune (text: 01001, 2A004)", "lib_com": "Name of that commune",
    "dep": "Département code (text: 35, 2A, 971)",
}


def _comment_columns(conn: psycopg.Connection, name: str, texts: dict[str, str]) -> None:
    """COMMENT ON COLUMN for each of `texts`' columns the view `mart.<name>` has."""
    view = sql.Identifier("mart", name)
    has = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                                      "AND table_name = %s", ("mart", name)).fetchall()}
    for col, text in texts.items():
        if col in has:
            conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(view, sql.Identifier(col), sql.Literal(text)))


def _wide_view(conn: psycopg.Connection, name: str, columns: list[tuple[str, str]], comment: str) -> None:
    """A view with one row per QPV and generation and one column per (indicator, scope)."""
    cols = [sql.SQL("max(i.value) FILTER (WHERE i.indicator_id = {} AND i.scope = {}) AS {}").format(
        sql.Literal(ind), sql.Literal(scope), sql.Identifier(ind + SCOPE_SUFFIX[scope])) for ind, scope in columns]
    select = sql.SQL(
        "SELECT q.code_qp, q.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep{extra} "
        "FROM ref.qpv q LEFT JOIN mart.qpv_indicator i "
        "ON i.code_qp = q.code_qp AND i.generation = q.generation "
        "GROUP BY q.code_qp, q.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep"
    ).format(extra=sql.SQL("").join(sql.SQL(", ") + c for c in cols))
    view = sql.Identifier("mart", name)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(view, select))
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(comment)))
    _comment_columns(conn, name, IDENTITY_COLUMNS)
    scope_fr = {"qpv": "", "commune": " — commune", "commune_hors_qpv": " — commune hors QPV"}
    for ind, scope in columns:
        label = conn.execute("SELECT label_fr || ' (' || unit || ')' FROM mart.indicator_catalog "
                             "WHERE indicator_id = %s", (ind,)).fetchone()
        if label:
            conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                view, sql.Identifier(ind + SCOPE_SUFFIX[scope]), sql.Literal(label[0] + scope_fr[scope])))


SERIES_VIEW_COLUMNS = {
    "indicator_id": "Indicator id (mart.indicator_catalog)", "label_fr": "Label in French", "unit": "Unit of value",
    "scope": "qpv, commune or commune_hors_qpv", "release": "First release (edition) carrying this figure",
    "releases": "Every release carrying the same figure (a repeat of the previous release is not « no change »)",
    "millesime": "Millésime of the value", "value": "Value (unsuppressed: analysts only)",
    "release_previous": "Release of the previous distinct figure", "value_previous": "Previous distinct figure",
    "evolution": "Change since the previous figure: points for rates, % otherwise; NULL when not comparable",
    "evolution_unit": "points or %", "evolution_note": "Why there is no evolution (definition changed, value missing…)",
}


def _series_view(conn: psycopg.Connection, name: str, theme: str) -> None:
    """`mart.theme_<theme>_series`: the theme's history, long (one row per QPV, indicator, scope and distinct
    figure), with the evolution from the previous figure or why there is none."""
    view = sql.Identifier("mart", name)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(sql.SQL(
        "CREATE VIEW {} AS SELECT s.code_qp, s.generation, q.lib_qp, q.insee_com, q.lib_com, s.indicator_id, "
        "c.label_fr, c.unit, s.scope, s.release, s.releases, s.millesime, s.value, e.release_from AS release_previous, "
        "e.value_from AS value_previous, e.evolution, e.unit AS evolution_unit, e.reason AS evolution_note "
        "FROM mart.qpv_indicator_series s JOIN mart.indicator_catalog c USING (indicator_id) "
        "LEFT JOIN ref.qpv q USING (code_qp, generation) "
        "LEFT JOIN mart.qpv_indicator_evolution e ON e.code_qp = s.code_qp AND e.generation = s.generation "
        "AND e.indicator_id = s.indicator_id AND e.scope = s.scope AND e.release_to = s.release "
        "WHERE c.theme = {}").format(view, sql.Literal(theme)))
    _comment_columns(conn, name, IDENTITY_COLUMNS | SERIES_VIEW_COLUMNS)
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(
        f"Theme « {theme} », every loaded release: one row per QPV, indicator, scope and distinct figure "
        "(releases: every edition carrying it); evolution from the previous figure in points (rates) or % "
        "(counts, amounts), NULL with evolution_note where not comparable. Unsuppressed: analysts only")))


def rebuild_profile(conn: psycopg.Connection) -> None:
    """`mart.qpv_profile` (every indicator, scope qpv) and one `mart.theme_<theme>` view per theme
    (its indicators in every scope computed, commune comparisons beside the QPV value)."""
    present = conn.execute(
        "SELECT i.indicator_id, i.scope, c.theme FROM (SELECT DISTINCT indicator_id, scope FROM mart.qpv_indicator) i "
        "JOIN mart.indicator_catalog c USING (indicator_id) "
        "ORDER BY c.theme, i.indicator_id, array_position(ARRAY['qpv', 'commune', 'commune_hors_qpv'], i.scope)"
    ).fetchall()
    _wide_view(conn, "qpv_profile", sorted((i, s) for i, s, _ in present if s == "qpv"),
               "One row per QPV and generation, one column per indicator (scope qpv); see mart.indicator_catalog")
    themes = sorted({t for *_, t in conn.execute("SELECT theme FROM mart.indicator_catalog").fetchall()})
    existing = {r[0] for r in conn.execute(
        "SELECT viewname FROM pg_views WHERE schemaname = 'mart' AND viewname LIKE 'theme\\_%'").fetchall()}
    for theme in themes:
        name = theme_view_name(theme)
        _wide_view(conn, name, [(i, s) for i, s, t in present if t == theme],
                   f"Theme « {theme} »: one row per QPV and generation; columns <indicator> (QPV), "
                   "<indicator>__commune and <indicator>__hors_qpv (the commune outside its QPV) where computed")
        existing.discard(name)
        _series_view(conn, name + "_series", theme)
        existing.discard(name + "_series")
    for stale in existing:
        conn.execute(sql.SQL("DROP VIEW {}").format(sql.Identifier("mart", stale)))
    _networks_view(conn)


def _networks_view(conn: psycopg.Connection) -> None:
    """`mart.qpv_networks`: which transport networks (GTFS feeds) serve each QPV, with their stops within
    300 m — the names behind the `reseaux_300m` count. Absent while no feed is loaded."""
    view = sql.Identifier("mart", "qpv_networks")
    has = conn.execute("SELECT count(*) = 2 FROM information_schema.columns WHERE table_schema = 'src' AND "
                       "table_name = 'gtfs_stops' AND column_name IN ('feed_id', 'network')").fetchone()[0]
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    if not has:
        return
    conn.execute(sql.SQL(
        "CREATE VIEW {} AS SELECT q.generation, q.code_qp, q.lib_qp, st.feed_id, st.network, "
        "count(DISTINCT st.stop_id) AS stops_300m FROM ref.qpv_subdivided s "
        "JOIN ref.qpv q USING (generation, code_qp) "
        "JOIN src.gtfs_stops st ON ST_DWithin(st.geom, s.geom, 300) AND coalesce(st.location_type, 0) = 0 "
        "GROUP BY 1, 2, 3, 4, 5").format(view))
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(
        "Transport networks (GTFS feeds, one partition of src.gtfs_stops each) with a stop in the QPV or "
        "within 300 m: one row per QPV and network")))
    _comment_columns(conn, "qpv_networks", IDENTITY_COLUMNS | {
        "feed_id": "Feed (partition of src.gtfs_stops)", "network": "Network (the feed's title)",
        "stops_300m": "Stops of that network in the QPV or within 300 m"})
