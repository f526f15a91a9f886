"""Store adapters: sqlite (embedded default) and firestore."""
