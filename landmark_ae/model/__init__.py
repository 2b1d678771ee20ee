"""Autoencoders built from YAML layer lists, and their versioned weights-only checkpoints."""
