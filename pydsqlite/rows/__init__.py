"""``Database``: validated reads and writes of table models, their row codecs and query conditions."""
