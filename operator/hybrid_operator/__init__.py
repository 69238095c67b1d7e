"""HybridInference Kubernetes operator (kopf): CRD models, rendering, reconcile, and the planner.

`kopf run -m hybrid_operator` imports this package, so the kopf handlers are registered here, but
only when kopf is installed: `hybrid_operator.planner` (and the `plan` command) must import without it.
Never imports hybrid_workers' engine: the operator image has no torch.
"""

import importlib.util

if importlib.util.find_spec("kopf") is not None:
    from hybrid_operator import handlers as handlers
