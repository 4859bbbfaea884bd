"""What people see: ``estimate``, ``status`` and ``export``, the HTML report.

Read the journal and may fetch (a balance, a reference URL, a result image), but never submit:
they may not import the engine, the uploader or the runner (checked by import-linter).
"""
