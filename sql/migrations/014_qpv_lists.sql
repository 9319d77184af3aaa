-- The QPV lists become a registry (include/qpv_lists.yml): each list's exact code format is checked by its
-- sources' suites (`{check: qpv, list: <year>}`); the table keeps the shape every list shares (Q, a letter,
-- the département on three characters, three more), so that a new list is an entry of the registry, not a
-- migration.
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE ref.qpv DROP CONSTRAINT qpv_code_format;
ALTER TABLE ref.qpv ADD CONSTRAINT qpv_code_shape CHECK (code_qp ~ '^Q[A-Z]([0-9]{3}|02[AB])[0-9A-Z]{3}$');
COMMENT ON COLUMN ref.qpv.code_qp IS 'QPV code of its list (include/qpv_lists.yml): QP + département (3 characters) + 3 digits for the 2015 list, QN + département + 2 digits + letter for the 2024 list';
COMMENT ON COLUMN ref.qpv.generation IS 'QPV list, by its year (include/qpv_lists.yml: 2015, 2024)';
