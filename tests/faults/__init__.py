"""Fault-injection suite: the whole pipeline under kills, broker cuts and a locked store.

One command runs it in full (``python -m tests.faults --callbacks 5000``);
``test_faults.py`` runs a short form as part of ``make test``. See
docs/faults.md for what it does, what it promises and the figures of a run.
"""
