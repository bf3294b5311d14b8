"""Thin typer shells over library functions: parse, call, print with rich."""
