"""qpvhub's OGC API: tipg's application, with each collection's title and description taken from the
PostgreSQL comments the publication writes (tipg lists tables by name only), behind a guard.

Runs in the API server's own virtualenv (`.venv-api`, tipg only, no qpvhub): `uvicorn qpvhub_api_app:app
--app-dir include/api`, the environment from `qpvhub.serve.api.api_environment` (schema `pub`, role qpvhub_api).

The guard (`Guard`) checks every request before tipg sees it, because tipg's CQL2 `filter` passes function
calls into SQL (`int4(version()) = 1` answered the server version, `pg_sleep` held connections) and a deeply
nested filter crashed the parser: a filter is read by its length and nesting first, then parsed and allowed
only comparisons (=, <>, <, <=, >, >=, LIKE, BETWEEN, IN, IS NULL), logic (AND, OR, NOT) and spatial
predicates (S_INTERSECTS…) between the collection's own properties and literals; `limit`, `offset`,
`sortby`, `properties`, `bbox` are checked against their type and the collection. Refusals are 400 with the
rule, in French; any 5xx becomes a generic answer, the details going to the server's log only. The database
role bounds the rest (statement timeout, connection limit: sql/migrations/015_api_bounds.sql).
"""

from __future__ import annotations

import json
import logging
import math
from urllib.parse import parse_qsl

import cql2
from starlette.requests import Request
from starlette.responses import JSONResponse
from tipg.main import app

log = logging.getLogger("qpvhub.api")

COMMENTS = (
    "SELECT n.nspname || '.' || c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'v', 'm')"
)
MAX_QUERY = 4096  # characters of the whole query string
MAX_FILTER = 2048  # characters of a filter
MAX_DEPTH = 20  # nesting of a filter's parentheses (or JSON brackets)
MAX_INT = 2**31 - 1
COMPARISONS = {"=", "<>", "<", "<=", ">", ">=", "like", "between", "in", "isnull"}
LOGIC = {"and", "or", "not"}
SPATIAL = {"s_intersects", "s_equals", "s_disjoint", "s_touches", "s_within", "s_overlaps", "s_crosses",
           "s_contains"}
KINDS = {"number": {"int2", "int4", "int8", "float4", "float8", "numeric", "smallint", "integer", "bigint", "real",
                    "double precision", "oid"},
         "text": {"text", "varchar", "char", "bpchar", "character varying", "name", "citext"},
         "boolean": {"bool", "boolean"}, "geometry": {"geometry", "geography"},
         "date": {"date", "timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone"}}
RULE = ("seuls sont admis les comparaisons (=, <>, <, <=, >, >=, LIKE, BETWEEN, IN, IS NULL), la logique (AND, OR, "
        "NOT) et les prédicats spatiaux (S_INTERSECTS…) entre les propriétés de la collection et des valeurs")


class Refused(Exception):
    """A request the guard answers with 400 and this French message."""


def _depth(text: str) -> int:
    """The deepest nesting of ( [ { outside quoted strings, without parsing anything."""
    depth = deepest = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _kind_of_type(sql_type: str) -> str | None:
    return next((k for k, types in KINDS.items() if sql_type.lower() in types), None)


def _kind(node, properties: dict[str, str]) -> str:
    """The kind of a filter's operand: a property's (refused when unknown), or a literal's."""
    if isinstance(node, dict) and "property" in node:
        name = node["property"]
        if name not in properties:
            raise Refused(f"filtre refusé : « {name} » n'est pas une propriété de la collection "
                          f"(propriétés : {', '.join(sorted(properties))})")
        kind = properties[name]
        if kind is None:
            raise Refused(f"filtre refusé : la propriété « {name} » ne peut pas être filtrée")
        return kind
    if isinstance(node, dict) and "op" in node:
        raise Refused(f"filtre refusé : « {node['op']} » n'est pas une valeur ; {RULE}")
    if isinstance(node, bool):
        return "boolean"
    if isinstance(node, int | float) and math.isfinite(node):
        return "number"
    if isinstance(node, str):
        return "text"
    if isinstance(node, dict) and (("type" in node and ("coordinates" in node or "geometries" in node))
                                   or set(node) == {"bbox"}):
        return "geometry"
    if isinstance(node, dict) and set(node) in ({"date"}, {"timestamp"}):
        return "date"
    raise Refused(f"filtre refusé : une valeur n'est pas admise ; {RULE}")


def _same(a: str, b: str, op: str) -> None:
    if a != b and {a, b} != {"date", "text"}:
        raise Refused(f"filtre refusé : « {op} » compare une valeur de type {a} à une valeur de type {b}")


def _operators(node) -> None:
    """Every operator or function anywhere in the tree is an allowed one (checked before types: the answer names
    the function a request tried)."""
    if isinstance(node, dict):
        if "op" in node and str(node["op"]).lower() not in COMPARISONS | LOGIC | SPATIAL:
            raise Refused(f"filtre refusé : l'opération ou la fonction « {node['op']} » n'est pas admise ; {RULE}")
        for v in node.values():
            _operators(v)
    elif isinstance(node, list):
        for v in node:
            _operators(v)


def check_filter(node, properties: dict[str, str | None]) -> None:
    """Walk a filter's CQL2-JSON: a predicate of the allowed operators, on the collection's properties and
    literals of matching types (a type mismatch would be PostgreSQL's error, answered as a server error)."""
    if isinstance(node, dict) and "property" in node and _kind(node, properties) == "boolean":
        return
    if not (isinstance(node, dict) and "op" in node):
        raise Refused(f"filtre refusé : une condition est attendue ; {RULE}")
    op, args = str(node["op"]).lower(), node.get("args", [])
    if op not in COMPARISONS | LOGIC | SPATIAL:
        raise Refused(f"filtre refusé : l'opération ou la fonction « {node['op']} » n'est pas admise ; {RULE}")
    if op in LOGIC:
        if not args or (op == "not" and len(args) != 1):
            raise Refused(f"filtre refusé : « {op} » sans condition")
        for arg in args:
            check_filter(arg, properties)
        return
    if op == "isnull":
        if len(args) != 1 or not (isinstance(args[0], dict) and "property" in args[0]):
            raise Refused("filtre refusé : IS NULL porte sur une propriété")
        _kind(args[0], properties)
        return
    if not any(isinstance(a, dict) and "property" in a for a in args):
        raise Refused(f"filtre refusé : « {op} » doit porter sur une propriété de la collection")
    if op in SPATIAL:
        if len(args) != 2 or any(_kind(a, properties) != "geometry" for a in args):
            raise Refused(f"filtre refusé : « {op} » prend deux géométries (une propriété géométrique, une géométrie "
                          "ou une BBOX)")
        return
    if op == "in":
        if len(args) != 2 or not isinstance(args[1], list) or not args[1]:
            raise Refused("filtre refusé : IN prend une propriété et une liste de valeurs")
        kind = _kind(args[0], properties)
        for v in args[1]:
            _same(kind, _kind(v, properties), op)
        return
    expected = 3 if op == "between" else 2
    if len(args) != expected:
        raise Refused(f"filtre refusé : « {op} » prend {expected} opérandes")
    kinds = [_kind(a, properties) for a in args]
    if op == "like" and kinds != ["text", "text"]:
        raise Refused("filtre refusé : LIKE compare un texte à un motif")
    if "geometry" in kinds or (op not in ("=", "<>") and "boolean" in kinds):
        raise Refused(f"filtre refusé : « {op} » ne s'applique pas à ce type")
    for k in kinds[1:]:
        _same(kinds[0], k, op)


def _integer(name: str, value: str, low: int) -> None:
    if not value.isdigit() or not low <= int(value) <= MAX_INT:
        raise Refused(f"paramètre {name} : un entier entre {low} et {MAX_INT} est attendu, pas « {value[:40]} »")


def check_query(params: list[tuple[str, str]], properties: dict[str, str | None] | None) -> None:
    """Every parameter the guard knows, against its type and, for a collection's request, its properties."""
    values = {k.lower(): v for k, v in params}
    for name, low in (("limit", 1), ("offset", 0)):
        if name in values:
            _integer(name, values[name], low)
    if "bbox" in values:
        parts = values["bbox"].split(",")
        try:
            ok = len(parts) in (4, 6) and all(math.isfinite(float(p)) for p in parts)
        except ValueError:
            ok = False
        if not ok:
            raise Refused("paramètre bbox : 4 ou 6 nombres séparés par des virgules sont attendus")
    if properties is None:
        return
    named = [(k, n.strip().lstrip("+-")) for k in ("sortby", "properties") if k in values
             for n in values[k].split(",") if n.strip()]
    named += [(k, values[k]) for k in ("geom-column", "datetime-column") if k in values]
    for key, name in named:
        if name not in properties:
            raise Refused(f"paramètre {key} : « {name[:60]} » n'est pas une propriété de la collection")
    if "filter" in values:
        text = values["filter"]
        if len(text) > MAX_FILTER:
            raise Refused(f"filtre refusé : plus de {MAX_FILTER} caractères")
        if _depth(text) > MAX_DEPTH:
            raise Refused(f"filtre refusé : plus de {MAX_DEPTH} niveaux d'imbrication")
        lang = values.get("filter-lang", "cql2-text")
        try:
            expr = cql2.parse_json(text) if lang == "cql2-json" else cql2.parse_text(text)
            tree = expr.to_json()
        except Exception as exc:  # the parser's own errors: a syntax error is the client's
            raise Refused(f"filtre illisible ({lang}) : {str(exc).splitlines()[0][:200]}") from None
        _operators(tree)
        check_filter(tree, properties)


def _collection_properties(scope) -> dict[str, str | None] | None:
    """The properties (and geometry columns) of the collection a path names and their kinds, None for other
    paths."""
    parts = scope["path"].strip("/").split("/")
    if len(parts) < 2 or parts[0] != "collections":
        return None
    catalog = getattr(scope["app"].state, "collection_catalog", None)
    col = catalog["collections"].get(parts[1]) if catalog else None
    return {c.name: _kind_of_type(c.type) for c in col.properties} if col is not None else None


async def _answer(send, status: int, body: dict) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware: requests checked before tipg sees them; 5xx answers replaced by a generic one."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        raw = scope.get("query_string", b"").decode("latin-1")
        try:
            if len(raw) > MAX_QUERY:
                raise Refused(f"requête refusée : plus de {MAX_QUERY} caractères de paramètres")
            check_query(parse_qsl(raw, keep_blank_values=True), _collection_properties(scope))
        except Refused as exc:
            await _answer(send, 400, {"code": "InvalidParameterValue", "description": str(exc)})
            return
        failed = {"status": None}

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 500:
                failed["status"] = message["status"]
                return
            if failed["status"] is not None:
                if message["type"] == "http.response.body":
                    log.error("%s %s?%s answered %s: %s", scope["method"], scope["path"], raw[:500],
                              failed["status"], message.get("body", b"")[:2000].decode("utf-8", "replace"))
                    if not message.get("more_body"):
                        await _answer(send, failed["status"], {
                            "code": "ErreurInterne",
                            "description": "erreur interne du serveur : la requête n'a pas abouti (le détail "
                                           "est dans le journal du serveur)"})
                return
            await send(message)

        try:
            await self.inner(scope, receive, guarded_send)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if failed["status"] is None:
                await _answer(send, 500, {"code": "ErreurInterne", "description": "erreur interne du serveur"})


class Describe:
    """ASGI middleware: once per catalogue (tipg may refresh it), set titles and descriptions."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.described: int | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            state = scope["app"].state
            catalog = getattr(state, "collection_catalog", None)
            if catalog is not None and self.described != id(catalog):
                schemas = sorted({c.split(".", 1)[0] for c in catalog["collections"]})
                async with state.pool.acquire() as conn:
                    comments = dict(await conn.fetch(COMMENTS, schemas))
                for cid, col in catalog["collections"].items():
                    text = comments.get(cid)
                    if text:
                        col.description = text
                        col.title = text.split(" — ")[0].split(". ")[0][:120]
                self.described = id(catalog)
        await self.inner(scope, receive, send)


LOCATE_SQL = """
WITH p AS (SELECT ST_Transform(ST_SetSRID(ST_MakePoint($1, $2), 4326), 2154) AS g)
SELECT q.code_qp, q.lib_qp, q.insee_com,
       CASE WHEN ST_Intersects(q.geom, p.g) THEN ST_Distance(ST_Boundary(q.geom), p.g)
            ELSE -ST_Distance(q.geom, p.g) END AS distance
FROM p CROSS JOIN LATERAL (
    SELECT code_qp, lib_qp, insee_com, geom FROM pub.qpv_perimetre
    WHERE generation = $3 ORDER BY geom <-> p.g LIMIT 1) q
"""  # the nearest perimeter by the GiST index (KNN), then the exact distance: no table scan


def _number(name: str, value: str | None, low: float, high: float) -> float:
    try:
        v = float(value) if value is not None else math.nan
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and low <= v <= high):
        raise Refused(f"paramètre {name} : un nombre entre {low:g} et {high:g} est attendu")
    return v


@app.get("/locate", tags=["Localisation"], summary="Un point est-il dans un quartier prioritaire ?")
async def locate(request: Request) -> JSONResponse:
    """Le quartier prioritaire (liste 2024 par défaut ; `liste=2015` ou `liste=2015,2024`) qui contient le point
    WGS84 `lon`, `lat`, la distance signée à sa limite la plus proche (m, positive à l'intérieur) et un statut :
    dans_qpv, hors_qpv ou a_verifier (à moins de `marge` mètres d'une limite, 20 par défaut). Indicatif : seule
    l'attestation du service SIG Ville fait foi."""
    q = request.query_params
    try:
        lon = _number("lon", q.get("lon"), -180, 180)
        lat = _number("lat", q.get("lat"), -90, 90)
        margin = _number("marge", q.get("marge", "20"), 0, 1000)
        lists = sorted({int(x) for x in q.get("liste", "2024").split(",") if x.strip().isdigit()})
        if not lists or not set(lists) <= {2015, 2024}:
            raise Refused("paramètre liste : 2015, 2024 ou 2015,2024 est attendu")
    except Refused as exc:
        return JSONResponse({"code": "InvalidParameterValue", "description": str(exc)}, status_code=400)
    out: dict = {"lon": lon, "lat": lat, "marge_m": margin}
    async with request.app.state.pool.acquire() as conn:
        for gen in lists:
            row = await conn.fetchrow(LOCATE_SQL, lon, lat, gen)
            if row is None:
                out[f"liste_{gen}"] = {"statut": "non_localise", "motif": f"aucun périmètre de la liste {gen} chargé"}
                continue
            d = float(row["distance"])
            statut = "a_verifier" if abs(round(d, 1)) <= margin else ("dans_qpv" if d >= 0 else "hors_qpv")
            out[f"liste_{gen}"] = {
                "statut": statut,
                "motif": f"à {abs(d):.0f} m d'une limite de QPV (marge {margin:g} m)" if statut == "a_verifier" else "",
                "qpv_code": row["code_qp"] if d >= 0 else None, "qpv_nom": row["lib_qp"] if d >= 0 else None,
                "commune_insee": row["insee_com"] if d >= 0 else None,
                "qpv_le_plus_proche": row["code_qp"], "distance_limite_m": round(d, 1)}
    return JSONResponse(out)


app.add_middleware(Describe)
app.add_middleware(Guard)  # added last: the outermost, it sees every request first and every answer last
