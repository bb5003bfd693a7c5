"""Data sources -> the canonical arrays; augmentation on the device."""
