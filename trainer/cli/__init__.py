"""Command lines of the trainer package: thin typer shells over library functions."""
