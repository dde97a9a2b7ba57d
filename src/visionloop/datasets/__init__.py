"""Versioned datasets: manifests, splits, importers, validation and materialization."""
