"""The model stage: backbone + weights, preprocessing inside, a new head, freezing."""
