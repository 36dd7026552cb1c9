"""The names by which the pipeline's tasks, and the training jobs they launch, find the cluster's
settings: the contract between the manifests in k8s/ and the code (docs/cluster.md)."""

# Secret kubeflow/interactavatar-s3: the pipeline's own MinIO pair (read-write on the dvc, mlflow and
# models buckets; never MinIO's root pair).
S3_SECRET = "interactavatar-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# ConfigMap kubeflow/interactavatar-endpoints: where S3 and MLflow are.
ENDPOINTS_CONFIG_MAP = "interactavatar-endpoints"
ENDPOINT_KEYS = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "S3_USE_HTTPS", "AWS_DEFAULT_REGION",
                 "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY")
# The project's image (Dockerfile at the repository root): every pipeline task and TrainJob node runs it.
IMAGE = "interactavatar/interactavatar:0.1.0"
IMAGE_UID = 10001  # the image's unprivileged user (Dockerfile: useradd --uid 10001)
# ClusterTrainingRuntime interactavatar-torch (k8s/training/): Trainer's torch runtime with the project
# image and a hardened pod; the TrainJobs' default.
TRAINER_RUNTIME = "interactavatar-torch"
