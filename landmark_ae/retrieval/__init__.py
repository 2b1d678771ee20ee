"""Retrieval: embed, post-processing, exact search, metrics, evaluate and query."""
