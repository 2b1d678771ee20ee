"""Training: the loop, the objectives and the augmented views they use."""
