"""KG + corpus -> dataset: the per-document work both pipelines run
(tokenize_worker.py), the local process-pool build (build.py), Apache Beam
(beam_build.py) and adding train views to a built dataset (add_views.py)."""
