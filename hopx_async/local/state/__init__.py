"""The state layer: the on-disk layout, the records, and the SQLite store that keeps them."""
