"""Operations over the format and a store: push, pull, catalog queries."""
