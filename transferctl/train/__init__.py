"""The training stage: phases in order, each with its own freezing, optimizer and schedule."""
