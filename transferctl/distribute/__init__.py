"""Spreading training over devices and machines: the strategy, TF_CONFIG clusters, Keras fixes."""
