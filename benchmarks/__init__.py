"""Benchmarks for Flask-JWT-Shield (not part of the package); see README.md."""
