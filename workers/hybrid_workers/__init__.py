"""HybridInference data plane: prefill and decode workers, the KV wire, and the command line."""

__version__ = "0.1.0"
