"""One module per CLI command: parse, call the stage, print a summary."""
