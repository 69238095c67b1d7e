"""The native decode agent (`hybrid-inference agent`): runs decode workers the operator assigns to it.

For machines Kubernetes cannot schedule pods on (a Mac: no kubelet, no Metal in a Linux VM). The
contract with the operator lives in hybrid_operator.agent_contract; the Kubernetes client is the
operator's (hybrid_operator.kube) with this package's own permission table. Modules: config (flags),
kubeconfig (credentials), permissions (RBAC), host (address, memory, engine), assignment (ConfigMap
-> worker command line), worker (one supervised process), lease (heartbeat), watch (assignments),
runner (the loop tying them together), launchd (the macOS service).
"""
