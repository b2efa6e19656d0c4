"""The run directory: its file names and atomic writes, the lock, finding runs by name, and
the pictures every run keeps (curves, reconstructions)."""
