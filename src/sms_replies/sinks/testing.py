"""Contract tests for sink authors (pytest plugin). Filled in by the sink kit work."""
