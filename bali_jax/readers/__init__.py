"""The shared base's readers: KG releases (UMLS RRF, OBO/JSON ontologies,
the open default), corpora (BERN2/PubTator, raw text, PubMed XML), the
graph and its TSV tables, and the bad-input types. Used by data_prep and by
`evaluate` (dictionaries and gold corpora); they import only the base."""
