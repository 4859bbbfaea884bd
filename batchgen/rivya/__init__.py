"""How we speak to the service: the HTTP client, typed records of its answers, the retry policy
and the request budget that paces every request of an account.

May import :mod:`batchgen.job` and :mod:`batchgen.errors`; never ``pipeline``, ``store`` or
``views`` (checked by import-linter).
"""
