"""« Is this address in a QPV? »: points or addresses located against the QPV perimeters of each list.

`points` answers for coordinates (containing QPV, signed distance to the nearest boundary) from an in-memory index
of the perimeters; `geocode` turns addresses into points through IGN's Géoplateforme batch service; `job` streams
a partner's CSV through both and writes every row back with its `statut`; `partners` runs the store's inbox →
outbox workflow. Addresses and coordinates are personal data: they are held in memory while a file is processed
and written only to the result, never to logs, `meta`, the raw archive or the published store.
"""
