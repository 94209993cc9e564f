"""psicbatch: train, compile and run PSIC-Net for batch surface-defect inspection."""

__version__ = "0.1.0"
