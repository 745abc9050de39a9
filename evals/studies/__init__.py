"""The CPU studies that train with ``unilip.training`` and evaluate through the harness's public API
(``evals.run``): the distillation-weight sweep and the quickstart built on it."""
