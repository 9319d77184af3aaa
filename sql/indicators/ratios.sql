-- ---
-- family: ratios
-- sources: [sigville_ipro, rennes_job_offers]
-- requires: ["indicator:demandeurs_emploi_abc", "indicator:offres_emploi_5km"]
-- generation: 2015
-- absent_fr: "l'un des deux termes du rapport n'est pas disponible pour ce quartier"
-- indicators:
--   - id: demandeurs_par_offre_5km
--     label_fr: Demandeurs d'emploi (ABC) par offre à moins de 5 km
--     unit: demandeurs par offre
--     theme: emploi
--     method: >
--       Demandeurs d'emploi de catégories A, B, C du QPV (SIG Ville) divisés par le nombre d'offres à
--       moins de 5 km (offres_emploi_5km). Numérateur et dénominateur sont donnés ; absent si l'un
--       manque ou s'il n'y a aucune offre.
--     millesime: SIG Ville et fichier d'offres
--     range: [0, 100000]
--     secrecy: {rate_of: demandeurs_emploi_abc, numerator: demandeurs_emploi_abc, denominator: offres_emploi_5km}
-- ---
-- Computed from indicators of this run (staging.qpv_indicator_next), so the ratio always matches its parts.
SELECT 'demandeurs_par_offre_5km' AS indicator_id, d.code_qp, d.generation, 'qpv' AS scope,
       round((d.value / o.value)::numeric, 2)::double precision AS value,
       d.value AS numerator, o.value AS denominator,
       d.millesime || ' ; offres : ' || o.millesime AS millesime,
       ARRAY(SELECT DISTINCT unnest(d.source_run_ids || o.source_run_ids) ORDER BY 1) AS source_run_ids
FROM staging.qpv_indicator_next d
JOIN staging.qpv_indicator_next o ON o.code_qp = d.code_qp AND o.generation = d.generation AND o.scope = 'qpv'
                 AND o.indicator_id = 'offres_emploi_5km'
WHERE d.indicator_id = 'demandeurs_emploi_abc' AND d.scope = 'qpv' AND o.value > 0
