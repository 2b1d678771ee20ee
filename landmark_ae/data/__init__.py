"""Prepared datasets: the prepare stage, splits, image decoding and the prepared-array reader."""
