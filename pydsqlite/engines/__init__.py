"""How pydsqlite drives a connection: transactions and modes per engine."""
