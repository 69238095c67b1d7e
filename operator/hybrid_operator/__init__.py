"""HybridInference Kubernetes operator (kopf): CRD models, rendering, reconcile, and the planner.

Never imports hybrid_workers' engine: the operator image has no torch.
"""
