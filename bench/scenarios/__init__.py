"""The measured scenarios, one module per area."""
