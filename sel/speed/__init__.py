"""The speed bench and the original's loop re-created."""
