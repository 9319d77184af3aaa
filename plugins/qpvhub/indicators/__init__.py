"""QPV-level indicators: the families of `sql/indicators/`, the derived geography, the mart and its history."""
