"""landmark-ae: unsupervised image retrieval with convolutional autoencoders."""
