"""The cluster: the names of its Secrets and ConfigMaps, Kubernetes clients, the Kubeflow Trainer
TrainJob launcher for multi-node training, and MinIO's setup (buckets, scoped users and policies)."""
