"""Data: the clip format, the synthetic world, motion rendering, the training dataset, validation."""
