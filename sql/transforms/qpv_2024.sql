-- qpv_2024: the main commune's name where the file gives none (ANCT's national file has lib_com; a copy
-- without it — the bundled PACA sample, rebuilt from another author's file — has only the INSEE code): the
-- name is the COG's for that code, so fiches and extracts never show a blank or "None" for the commune.
UPDATE {{staging}} q SET lib_com = c.nom
FROM ref.commune c
WHERE q.lib_com IS NULL AND c.insee_com = q.insee_com;
