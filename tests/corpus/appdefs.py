"""Application-defined collation and function used by the corpus.

make_dbs.py creates indexes that need them, as a Jellyfin plugin or another application
could; compare.py registers them too, so that the oracle's integrity_check can evaluate
those indexes instead of failing on "no such collation sequence".
"""

COLLATION = "corpus_reverse"
FUNCTION = "corpus_fold"


def reverse_order(a, b):
    """Binary order, reversed."""
    return (a < b) - (a > b)


def fold(x):
    """Case-fold text (ß -> ss, unlike SQLite's lower()); other values pass through."""
    return x.casefold() if isinstance(x, str) else x


def register(conn):
    conn.create_collation(COLLATION, reverse_order)
    conn.create_function(FUNCTION, 1, fold, deterministic=True)
