"""mastercontroller: the cluster (consensus, data plane, modes, dispatch); runs on every node."""
