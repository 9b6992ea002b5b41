"""The subcommands of ``scripts/benchmark.py``, one module each (``peak``, ``train``, ``sample``), and what
they share (``common``)."""
