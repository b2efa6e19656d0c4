"""Unsupervised pretraining (`transferctl pretrain`): the backbone as the encoder of an
autoencoder, trained on images without labels; its run is a `model.weights` for finetune."""
