"""Looking at finished runs without TensorFlow: runs side by side."""
