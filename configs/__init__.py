"""ml_collections configs; each file's docstring names the command that runs it."""
