-- ---
-- family: emploi
-- sources: [sigville_ipro]
-- requires: [src.sigville_ipro]
-- generation: 2015
-- absent_fr: "le fichier SIG Ville chargé ne donne pas cette valeur pour ce quartier"
-- indicators:
--   - id: demandeurs_emploi_abc
--     label_fr: Demandeurs d'emploi de catégories A, B, C
--     unit: personnes
--     theme: emploi
--     method: Demandeurs d'emploi inscrits à France Travail en catégories A, B et C (ABC, SIG Ville).
--     millesime: SIG Ville, données QPV
--     is_count: true
--     range: [0, 100000]
--     secrecy: count
--   - id: taux_emploi
--     label_fr: Taux d'emploi des 15-64 ans
--     unit: "%"
--     theme: emploi
--     method: Part des personnes de 15 à 64 ans ayant un emploi (TX_TOT_EMPL, SIG Ville).
--     millesime: SIG Ville, données QPV
--     range: [0, 100]
--     secrecy: {rate_of: population}
--   - id: part_emploi_precaire
--     label_fr: Part des emplois précaires
--     unit: "%"
--     theme: emploi
--     method: Part des emplois à durée limitée parmi les emplois salariés (TX_TOT_EDLIM, SIG Ville).
--     millesime: SIG Ville, données QPV
--     range: [0, 100]
--     comparable_from: 2021
--     comparability_note: "jusqu'à l'édition 2020, part des emplois précaires (TX_TOT_EPREC) ; depuis 2021, part des emplois à durée limitée (TX_TOT_EDLIM), une autre définition"
--     secrecy: {rate_of: population}
-- ---
WITH e AS (
    SELECT s.*, meta.millesime_of(s.source_run_id) AS mil
    FROM src.sigville_ipro s
    JOIN ref.qpv q ON q.generation = %(generation)s AND q.code_qp = s.code_qp
    WHERE s.release = %(release_sigville_ipro)s
)
SELECT i.indicator_id, e.code_qp, %(generation)s::smallint AS generation, 'qpv' AS scope, i.value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       e.mil AS millesime, ARRAY[e.source_run_id] AS source_run_ids
FROM e
CROSS JOIN LATERAL (VALUES
    ('demandeurs_emploi_abc', e.demandeurs_abc::double precision),
    ('taux_emploi', e.taux_emploi),
    ('part_emploi_precaire', e.part_emploi_precaire)
) AS i (indicator_id, value)
WHERE i.value IS NOT NULL
