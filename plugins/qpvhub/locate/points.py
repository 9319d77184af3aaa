"""Points against QPV perimeters: the containing QPV and the signed distance to the nearest boundary, vectorised.

The perimeters of one list are read once from `ref.qpv` (Lambert-93) into a shapely STRtree, and their boundaries,
densified every `SPACING` metres, into a k-d tree. A batch of points is answered with the STRtree's containment
query, then, for a point outside every QPV, the k-d tree's nearest boundary vertex names the nearest QPV and the
exact distance to that QPV is computed — no per-point Python loop. The k-d tree replaces GEOS' nearest-neighbour
search, which costs ~20 µs a point far from any QPV; its only approximation: of two QPV whose boundaries are
within SPACING / 2 of the same distance, either may be named (the distance given is then at most SPACING / 2
longer than the shortest). Inside a QPV, the distance is to its own boundary, exact (QPV do not overlap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
import shapely
from scipy.spatial import cKDTree
from shapely import STRtree

SPACING = 10.0  # metres between the boundary vertices of the k-d tree

# The geocoder answers with the arrondissement of Paris, Marseille and Lyon; commune-level files use the commune.
ARRONDISSEMENTS = (("751", 75101, 75120, "75056"), ("132", 13201, 13216, "13055"), ("6938", 69381, 69389, "69123"))


def commune_of(code: str | None) -> str | None:
    """The commune's INSEE code for an arrondissement's (13203 → 13055), other codes unchanged."""
    if not code:
        return None
    code = code.strip()
    if code.isdigit():
        n = int(code)
        for _prefix, first, last, commune in ARRONDISSEMENTS:
            if first <= n <= last:
                return commune
    return code


@dataclass
class Located:
    """Per point: the QPV containing it (None outside), that QPV's name and main commune, the signed distance to
    the nearest boundary in metres (positive inside, negative outside; NaN for a missing point) and the nearest
    QPV when outside."""

    code: np.ndarray
    name: np.ndarray
    commune: np.ndarray
    distance: np.ndarray
    nearest: np.ndarray


class Perimeters:
    """The perimeters of one QPV list, indexed."""

    def __init__(self, generation: int, codes: list[str], names: list[str], communes: list[str | None],
                 geoms: np.ndarray) -> None:
        self.generation = generation
        self.codes = np.asarray(codes, dtype=object)
        self.names = np.asarray(names, dtype=object)
        self.communes = np.asarray(communes, dtype=object)
        self.geoms = geoms
        shapely.prepare(self.geoms)
        self.boundaries = shapely.boundary(self.geoms)
        self.tree = STRtree(self.geoms)
        dense = shapely.segmentize(self.boundaries, SPACING) if len(self.geoms) else self.boundaries
        coords, owner = shapely.get_coordinates(dense, return_index=True) if len(self.geoms) else (
            np.empty((0, 2)), np.empty(0, dtype=np.int64))
        self.vertex_owner = owner
        self.vertices = cKDTree(coords) if len(coords) else None

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def from_db(cls, conn: psycopg.Connection, generation: int) -> Perimeters:
        """Every QPV of the list loaded in `ref.qpv`."""
        rows = conn.execute("SELECT code_qp, lib_qp, insee_com, ST_AsBinary(geom) FROM ref.qpv WHERE generation = %s "
                            "ORDER BY code_qp", (generation,)).fetchall()
        geoms = shapely.from_wkb([bytes(r[3]) for r in rows]) if rows else np.array([], dtype=object)
        return cls(generation, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], geoms)

    def locate(self, x: np.ndarray, y: np.ndarray) -> Located:
        """Locate Lambert-93 points (NaN where a row has none)."""
        n = len(x)
        code = np.full(n, None, dtype=object)
        nearest = np.full(n, None, dtype=object)
        distance = np.full(n, np.nan)
        ok = np.isfinite(x) & np.isfinite(y)
        if not len(self) or not ok.any():
            return Located(code, code.copy(), code.copy(), distance, nearest)
        idx = np.flatnonzero(ok)
        pts = shapely.points(x[idx], y[idx])
        inp, hit = self.tree.query(pts, predicate="intersects")
        # a point on a boundary shared by two QPV: the first in code order (the tree's order)
        first = np.unique(inp, return_index=True)[1]
        inp, hit = inp[first], hit[first]
        inside = np.zeros(len(idx), dtype=bool)
        inside[inp] = True
        pos = np.full(n, -1, dtype=np.int64)  # the containing QPV's index
        pos[idx[inp]] = hit
        code[idx[inp]] = self.codes[hit]
        nearest[idx[inp]] = self.codes[hit]
        distance[idx[inp]] = shapely.distance(pts[inp], self.boundaries[hit])
        out = np.flatnonzero(~inside)
        if len(out) and self.vertices is not None:
            _, vertex = self.vertices.query(np.column_stack([x[idx[out]], y[idx[out]]]))
            owner = self.vertex_owner[vertex]
            distance[idx[out]] = -shapely.distance(pts[out], self.geoms[owner])
            nearest[idx[out]] = self.codes[owner]
        name = np.where(pos >= 0, self.names[np.maximum(pos, 0)], None)
        commune = np.where(pos >= 0, self.communes[np.maximum(pos, 0)], None)
        return Located(code, name, commune, distance, nearest)
