"""Command-line entry points (`tinyllm --help`)."""
