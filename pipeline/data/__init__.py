"""Data: image reading and sources, sub-image extraction into Arrow shards, the training patch stream."""
