"""Command-line entry points (`diana-*`): thin argument parsing over the package."""
