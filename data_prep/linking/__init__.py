"""Linking raw text to the KG: the dictionary linker (longest match over
the graph's names, precision rules) for corpora without gold mentions."""
