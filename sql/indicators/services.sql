-- ---
-- family: services
-- sources: [bpe]
-- requires: [src.bpe]
-- absent_fr: "la base des équipements chargée ne couvre pas le département de ce quartier"
-- indicators:
--   - id: equipements_500m
--     label_fr: Équipements dans le quartier ou à moins de 500 m
--     unit: équipements
--     theme: services
--     method: >
--       Équipements géolocalisés de la BPE (tous domaines) situés dans le périmètre du QPV ou à moins
--       de 500 m (Lambert-93). Seuls les QPV des départements présents dans la BPE chargée ont une
--       valeur. Les équipements sans coordonnées (rejetés au chargement, voir meta.rejected_rows) ne
--       sont pas comptés.
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_a
--     label_fr: "Équipements à moins de 500 m — domaine A (services aux particuliers)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine A de la BPE (TYPEQU commençant par A).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_b
--     label_fr: "Équipements à moins de 500 m — domaine B (commerces)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine B de la BPE (TYPEQU commençant par B).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_c
--     label_fr: "Équipements à moins de 500 m — domaine C (enseignement)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine C de la BPE (TYPEQU commençant par C).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_d
--     label_fr: "Équipements à moins de 500 m — domaine D (santé et action sociale)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine D de la BPE (TYPEQU commençant par D).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_e
--     label_fr: "Équipements à moins de 500 m — domaine E (transports et déplacements)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine E de la BPE (TYPEQU commençant par E).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_f
--     label_fr: "Équipements à moins de 500 m — domaine F (sports, loisirs et culture)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine F de la BPE (TYPEQU commençant par F).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--   - id: equipements_500m_dom_g
--     label_fr: "Équipements à moins de 500 m — domaine G (tourisme)"
--     unit: équipements
--     theme: services
--     method: Comme equipements_500m, pour les types d'équipement du domaine G de la BPE (TYPEQU commençant par G).
--     millesime: BPE (millésime de la source)
--     is_count: true
--     range: [0, 100000]
-- ---
WITH run AS (
    SELECT min(source_run_id) AS run_id, array_agg(DISTINCT dep) AS deps FROM src.bpe
), near AS (            -- facilities within 500 m, found through the subdivided perimeters
    SELECT DISTINCT s.generation, s.code_qp, b.ctid AS fid, upper(left(b.typequ, 1)) AS domaine
    FROM ref.qpv_subdivided s
    JOIN ref.qpv q USING (generation, code_qp)
    JOIN src.bpe b ON ST_DWithin(b.geom, s.geom, 500)
    WHERE q.dep = ANY ((SELECT deps FROM run)::text[])
), per_domain AS (
    SELECT generation, code_qp, domaine, count(*) AS n FROM near GROUP BY 1, 2, 3
), counts AS (      -- every (QPV, domain) pair, 0 where no facility: the BPE covers the département
    SELECT q.generation, q.code_qp, q.source_run_id AS qpv_run, dm.d AS domaine, coalesce(pd.n, 0) AS n
    FROM ref.qpv q
    CROSS JOIN unnest(ARRAY['A', 'B', 'C', 'D', 'E', 'F', 'G']) AS dm (d)
    LEFT JOIN per_domain pd ON pd.generation = q.generation AND pd.code_qp = q.code_qp AND pd.domaine = dm.d
    WHERE q.dep = ANY ((SELECT deps FROM run)::text[])
)
SELECT 'equipements_500m_dom_' || lower(c.domaine) AS indicator_id, c.code_qp, c.generation, 'qpv' AS scope,
       c.n::double precision AS value, NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(r.run_id) AS millesime, ARRAY[c.qpv_run, r.run_id] AS source_run_ids
FROM counts c, run r
UNION ALL
SELECT 'equipements_500m', c.code_qp, c.generation, 'qpv', sum(c.n)::double precision, NULL, NULL,
       meta.millesime_of(r.run_id), ARRAY[c.qpv_run, r.run_id]
FROM counts c, run r
GROUP BY c.code_qp, c.generation, c.qpv_run, r.run_id
