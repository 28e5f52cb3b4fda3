"""Data: generators of paired images (and, later, readers of real files)."""
