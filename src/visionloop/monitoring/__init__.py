"""Production monitoring: the prediction log the server writes, and drift of it against a reference."""
