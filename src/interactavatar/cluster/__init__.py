"""The cluster: the names of its Secrets and ConfigMaps, Kubernetes clients, and the Kubeflow Trainer
TrainJob launcher for multi-node training."""
