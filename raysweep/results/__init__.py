"""Results as Arrow tables: the schemas, the one writer of each table, the reader, `show`."""
