"""The platform every stage stands on: settings, PostGIS connections and migrations, the object store, the
embedded cluster, errors, redaction of credentials."""
