"""Code the tests share, one module per idea; fixtures stay in the conftest.py files.

Tests import these as `from helpers.<module> import ...`: pytest puts tests/ on sys.path, as the
folder of the rootdir-level tests/conftest.py (the default "prepend" import mode).

- datasets: synthetic datasets for the tests (`make_dataset`, `TINY`/`DEMO` clip specs) and a
  throwaway git + DVC repository holding one (`make_data_repo`, `git`, `DVC`).
- json_stub: the base handler of the loopback API stubs, answering in JSON.
- k8s_manifests: paths, kubectl discovery and lookups over what `kubectl kustomize` renders from k8s/.
- local_stack: the S3 + MLflow servers of infra/local-stack.sh, started on free loopback ports.
- media: request media (a PNG image, a WAV speech clip) as bytes.
- model: builders for the network tests (heads given weights, random latents and conditions).
- model_server: `interactavatar serve` as a subprocess on a free loopback port (`RunningServer`).
- ports: several distinct free loopback ports for SeaweedFS (`free_ports`), and `port_is_free`.
  One free port is `interactavatar.train.engine.free_port()`.
- s3_server: a bare S3 server (SeaweedFS's `weed mini`) on loopback.
- train: training-stage specs of a few steps (`spec`) and weight comparisons.
- trainer_api_stub: a Kubernetes API server with Kubeflow Trainer, stubbed on loopback.
"""
