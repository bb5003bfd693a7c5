"""The model, the sync-free training loop, CUDA graphs, checkpoints."""
