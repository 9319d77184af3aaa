-- ---
-- family: demographie
-- sources: [sigville_demo]
-- requires: [src.sigville_demo]
-- generation: 2015
-- absent_fr: "le fichier SIG Ville chargé ne donne pas cette valeur pour ce quartier"
-- indicators:
--   - id: population
--     label_fr: Population municipale
--     unit: habitants
--     theme: socio-démographie
--     method: >
--       Population municipale du QPV publiée par SIG Ville / ONPV (POP_MUN). Portée « commune » :
--       population de la commune (POP_COM) ; « commune_hors_qpv » : population de la commune moins
--       celle de tous ses QPV (POP_COM - POP_COM_QP).
--     millesime: SIG Ville, données QPV (millésime de la source)
--     is_count: true
--     range: [0, 3000000]
--     secrecy: count
--   - id: part_moins_25
--     label_fr: Part des moins de 25 ans
--     unit: "%"
--     theme: socio-démographie
--     method: Part des habitants de moins de 25 ans (TX_TOT_0A24, SIG Ville).
--     millesime: SIG Ville, données QPV
--     range: [0, 100]
--     secrecy: {rate_of: population}
--   - id: part_60_plus
--     label_fr: Part des 60 ans et plus
--     unit: "%"
--     theme: socio-démographie
--     method: Part des habitants de 60 ans et plus (TX_TOT_60ETPLUS, SIG Ville).
--     millesime: SIG Ville, données QPV
--     range: [0, 100]
--     secrecy: {rate_of: population}
--   - id: part_etrangers
--     label_fr: Part des étrangers
--     unit: "%"
--     theme: socio-démographie
--     method: Part des habitants de nationalité étrangère (TX_TOT_ET, SIG Ville).
--     millesime: SIG Ville, données QPV
--     range: [0, 100]
--     secrecy: {rate_of: population}
-- ---
-- SIG Ville publishes the 2015 list only: rows join the 2015 generation. NULL (secret) cells give no row.
WITH d AS (
    SELECT s.*, meta.millesime_of(s.source_run_id) AS mil
    FROM src.sigville_demo s
    JOIN ref.qpv q ON q.generation = %(generation)s AND q.code_qp = s.code_qp
    WHERE s.release = %(release_sigville_demo)s
)
SELECT i.indicator_id, d.code_qp, %(generation)s::smallint AS generation, i.scope, i.value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       d.mil AS millesime, ARRAY[d.source_run_id] AS source_run_ids
FROM d
CROSS JOIN LATERAL (VALUES
    ('population', 'qpv', d.pop_qp::double precision),
    ('population', 'commune', d.pop_com::double precision),
    ('population', 'commune_hors_qpv', (d.pop_com - d.pop_com_qp)::double precision),
    ('part_moins_25', 'qpv', d.part_0_24),
    ('part_60_plus', 'qpv', d.part_60_plus),
    ('part_etrangers', 'qpv', d.part_etrangers)
) AS i (indicator_id, scope, value)
WHERE i.value IS NOT NULL
