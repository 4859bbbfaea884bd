"""What the user asks for: the job's settings, manifest, catalog and variants."""
