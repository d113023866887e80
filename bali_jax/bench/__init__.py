"""Benchmarks: `python -m bali_jax bench` (see bench/runner.py).

  runner.py      the command: our step, optional PyTorch peer, report
  ours.py        our training step timed, and its phases timed alone
  synthetic.py   records with a data card's statistics (no data needed)
  torch_peer.py  the authors' PyTorch stack on the same batches (extras)
"""
