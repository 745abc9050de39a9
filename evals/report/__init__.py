"""Reading saved results, comparison tables and the regression gate: they read files, never models."""
