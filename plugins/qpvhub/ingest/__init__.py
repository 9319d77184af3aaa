"""Ingestion: a catalogue entry's file located, fetched and archived, read, converted and staged, checked by
its suite, swapped in; every run recorded. `pipeline.ingest` is the chain, `parts.run_parts` every part."""
