-- What a publisher's catalogue said about the file a run fetched (qpvhub.locate): resource id, title,
-- date, size, checksum. An unchanged resource is not downloaded again.
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE meta.source_runs ADD COLUMN located jsonb;
COMMENT ON COLUMN meta.source_runs.located IS
    'For catalogue locators (datagouv: dataset/resource): what the API said at fetch time (resource_id, title, format, filesize, last_modified, checksum, url); NULL for plain URLs';

-- How old the data itself is (not the load): a GTFS feed's validity, read from its calendar.
ALTER TABLE meta.source_runs ADD COLUMN data_from date, ADD COLUMN data_until date;
COMMENT ON COLUMN meta.source_runs.data_from IS 'First day the data is valid for (GTFS: calendar start), when the reader can tell';
COMMENT ON COLUMN meta.source_runs.data_until IS 'Last day the data is valid for (GTFS: feed_end_date or calendar end); past it, qpvhub status says "expired"';
