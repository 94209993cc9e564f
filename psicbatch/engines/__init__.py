"""Compiled PSIC-Net engines behind one interface (see ``base.Engine``).

Backend modules are imported only when an engine of that kind is loaded, so TensorRT or
ONNX Runtime are never needed to use the others. Every engine runs on the device it is
opened on.
"""
