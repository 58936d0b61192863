"""The OpenAI-compatible Images API (``/v1``): the same tasks, quotas and history as the native routes."""
