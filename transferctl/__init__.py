"""transferctl: transfer learning on images with Keras 3 and TensorFlow."""

__version__ = "0.1.0"
