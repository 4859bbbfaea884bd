"""Running a job: the scan and plan of each row, the uploader, the engine that submits and polls,
the poll scheduler, downloads and progress; ``runner`` ties them into ``batchgen run``.

May import ``store``, ``rivya``, ``job`` and ``errors``, and ``sim`` for ``--simulate``.
"""
