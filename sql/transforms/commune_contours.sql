-- commune_contours: ADMIN EXPRESS COG lists a commune's EPCI in codes_siren_des_epci, '/'-separated, 'NR'
-- for none (public code that reads the file splits on '/' and drops 'NR'). The first is kept: the EPCI à
-- fiscalité propre (several only in the Métropole du Grand Paris, whose territories follow). ASSUMED order.
UPDATE {{staging}} SET siren_epci = NULLIF(NULLIF(trim(split_part(siren_epci, '/', 1)), 'NR'), '');

-- The EPCI's name, from the same edition's layer epci (entry epci_names), when it is loaded.
DO $$
BEGIN
    IF to_regclass('ref.epci_name') IS NOT NULL THEN
        UPDATE {{staging}} c SET nom_epci = e.nom_epci FROM ref.epci_name e WHERE e.siren_epci = c.siren_epci;
    END IF;
END $$;
