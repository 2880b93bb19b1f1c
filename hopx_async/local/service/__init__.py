"""The service layer: sandboxes, processes, the change feed, foreground runs, webhooks.

What the API does, without HTTP: the routes of ``http`` call it; it runs code through
``runtime`` and keeps its records in ``state``.
"""
