-- Review fixes (issue #18): publications may be withdrawn; URLs recorded before redaction are scrubbed.
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE meta.publications DROP CONSTRAINT publications_status_check;
ALTER TABLE meta.publications ADD CONSTRAINT publications_status_check
    CHECK (status IN ('published', 'unchanged', 'failed', 'withdrawn'));
COMMENT ON COLUMN meta.publications.status IS
    'published (a new version), unchanged (same content as latest), failed, or withdrawn (a kept version deleted: published under a weaker secrecy rule)';

-- Runs recorded before URLs were redacted: drop user-info, secret-looking query parameters and local paths
-- (the pipeline now records qpvhub.redact.redact_url(url) itself).
UPDATE meta.source_runs
SET urls = ARRAY(
    SELECT CASE
        WHEN u LIKE 'file:%' THEN 'file://…/' || regexp_replace(u, '^.*/', '')
        ELSE regexp_replace(regexp_replace(u, '^([a-z0-9+.-]+://)[^/@]*@', '\1', 'i'),
                            '([?&])[^=&]*(key|token|secret|passw|pwd|signature|credential|auth|session|x-amz-)[^=&]*=[^&]*',
                            '\1', 'gi')
    END
    FROM unnest(urls) AS u)
WHERE EXISTS (SELECT 1 FROM unnest(urls) AS u WHERE u LIKE 'file:%' OR u ~ '://[^/]*@' OR u ~* '[?&][^=&]*(key|token|secret|passw|pwd|signature|credential|auth|session|x-amz-)');
