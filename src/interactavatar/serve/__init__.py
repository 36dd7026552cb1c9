"""The endpoint: a KServe predictor (v1 and v2 protocols), its server, its InferenceService, and a client.

    contract.py   what a request may carry, the limits, and the checks (shared by v1 and v2)
    predictor.py  the kserve.Model: loads a model directory, admits, generates in a worker thread
    server.py     the KServe REST server on a chosen host, readiness = model loaded, size limit
    resolve.py    a model reference (directory, models:/NAME@alias, s3://...) -> a local directory
    client.py     HTTP client for both protocols (v2 with the binary tensor extension)
    cases.py      batches in the public release's test-case format, locally or against an endpoint
    isvc.py       the InferenceService, built from the kserve SDK's models
"""

MODEL_NAME = "interactavatar"
