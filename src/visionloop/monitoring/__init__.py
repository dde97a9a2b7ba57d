"""Production monitoring: drift of what the server sees against a reference window."""
