-- Commune codes of an older geography translated at load time (qpvhub.cog): what each run translated.
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE meta.source_runs ADD COLUMN cog_translation jsonb;
COMMENT ON COLUMN meta.source_runs.cog_translation IS 'For a source on an older commune geography (cog: in its entry): COG years from and to, the events file''s last date, per column the codes translated with the INSEE events they followed, the codes kept on a commune split since, the rows merged';
