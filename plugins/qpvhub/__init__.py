"""qpvhub: regional open-data hub for the quartiers prioritaires de la politique de la ville (QPV)."""

__version__ = "0.1.0"
