"""The input sizes PSIC-Net takes. Kept apart from ``model`` so that command options can
check sizes without importing torch."""

#: The network's total down-sampling; inputs are padded to a multiple of it.
STRIDE = 8
#: The smallest input side trained or built (the classifier pools 3 more times).
MIN_NETWORK_SIZE = 32
