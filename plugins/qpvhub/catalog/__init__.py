"""The catalogue: source entries (model, loading), the regions served, the QPV lists, the JSON Schema."""
