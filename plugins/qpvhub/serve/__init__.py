"""Serving partners and GIS clients: the OGC API's server settings."""
