"""One router module per way in or concern; the adapters never import each other."""
