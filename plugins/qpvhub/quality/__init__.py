"""The quality gate: Great Expectations Core suites (a source's, the mart's, an extract's) and their reports."""
