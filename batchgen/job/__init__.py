"""What the user asks for: the job's settings, its manifest, the model catalog, file types,
variants and download names.

Pure and synchronous: no network, no journal. Imports only :mod:`batchgen.errors`.
``settings_table`` is the one table of settings (defaults, flags, environment names, README).
"""
