"""The database: SQLAlchemy models and the store, the feed of other instances' writes, poller leadership, API tokens."""
