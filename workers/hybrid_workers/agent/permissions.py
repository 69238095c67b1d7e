"""Every API request the agent makes: the chart's agent Role grants exactly these (and no Secrets).

tests/workers/agent/test_agent_rbac.py derives the calls from the agent's code and checks both ways.
"""

from __future__ import annotations

from hybrid_operator.kube import Permission

AGENT_PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "configmaps", ("list", "watch"), "its assignments (filtered by its label)"),
    Permission("coordination.k8s.io", "leases", ("get", "patch"), "its own Lease (resourceNames: its name)"),
)
