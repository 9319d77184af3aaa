"""Operations: freshness of every source and failure notifications, the production locations' check."""
