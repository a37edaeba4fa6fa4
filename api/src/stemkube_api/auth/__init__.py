"""Who may use the API: API keys (``keys``), where they are kept (a store per mode), and the
caller every route sees (``caller``)."""
