"""Ray: starting or joining a cluster, fitting trials to its CPUs and GPUs, following nodes as they join."""
