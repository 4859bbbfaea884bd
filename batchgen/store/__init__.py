"""What lasts: the journal (the truth about every row and task), the job lock, the output table,
and small on-disk caches (key sets, URL verdicts).

May import :mod:`batchgen.job` and :mod:`batchgen.errors`; never speaks HTTP. The journal's SQL
lives in ``journal.py``; ``output.py`` is a read model of it.
"""
