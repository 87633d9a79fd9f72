"""The prediction log: every answer the service gives and the labels users send back, in a SQL database
(SQLAlchemy Core; SQLite by default, PostgreSQL for several replicas). Serving writes to it, `retrain` and
`promote` read from it. It knows nothing of HTTP."""
