"""What the user asks for: settings, manifest, catalog, file types."""
