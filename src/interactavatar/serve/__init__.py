"""The endpoint: a KServe predictor (v1 and v2 protocols), its server and its InferenceService.

    contract.py   what a request may carry, the limits, and the checks (shared by v1 and v2)
    protocols.py  v1 and v2 (binary extension included) requests and responses <-> the contract
    predictor.py  the kserve.Model: loads a model directory, admits, generates in a worker thread
    server.py     the KServe REST server on a chosen host, readiness = model loaded, size limit
    resolve.py    a model reference (directory, models:/NAME@alias, s3://...) -> a local directory
    isvc.py       the InferenceService, built from the kserve SDK's models

The client that calls the endpoint is `interactavatar.inference.client`: `generate --endpoint` uses
it, and this package depends on `inference`, not the other way round.
"""
