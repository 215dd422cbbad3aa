"""Generic helpers that belong to no domain app: SQL, ids, dates, locks, the base error.

Every app may import from here; nothing here imports from an app.
"""
