"""The Open Inference Protocol (KServe v2): REST and gRPC adapters over one implementation
of "predict for these rows" (inference.py)."""
