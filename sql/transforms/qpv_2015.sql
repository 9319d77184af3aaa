-- qpv_2015: département from the QPV code, INSEE commune code from the published commune name.
-- The source publishes the commune by name only; it is resolved in ref.commune within the QPV's
-- département (case, accents kept; spaces, hyphens and apostrophes ignored). Unresolved names stay
-- NULL and fail the suite's not-null expectation, naming the QPV.
UPDATE {{staging}} SET dep = CASE
    WHEN substr(code_qp, 3, 2) = '02' AND substr(code_qp, 5, 1) IN ('A', 'B') THEN '2' || substr(code_qp, 5, 1)
    WHEN substr(code_qp, 3, 2) = '97' THEN substr(code_qp, 3, 3)
    ELSE substr(code_qp, 4, 2)
END;

-- The national file joins the names of a QPV's communes with commas ("Rennes, Saint-Jacques-de-la-Lande"):
-- the first is the main commune.
UPDATE {{staging}} q SET insee_com = c.insee_com
FROM ref.commune c
WHERE c.dep = q.dep
  AND lower(regexp_replace(c.nom, '[[:space:]''’-]', '', 'g'))
    = lower(regexp_replace(split_part(q.lib_com, ',', 1), '[[:space:]''’-]', '', 'g'));
