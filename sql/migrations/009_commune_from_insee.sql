-- ref.commune now comes from INSEE's own v_commune_<year>.csv, which has no population (the COG is not a
-- population count; commune outlines carry one, ref.commune_contour.population).
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE ref.commune DROP COLUMN IF EXISTS population;
COMMENT ON TABLE ref.commune IS 'Current communes (INSEE COG, v_commune_<year>.csv, TYPECOM = COM); replaced whole by each load';
