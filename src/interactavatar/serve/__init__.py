"""The endpoint: a KServe predictor (v1 and v2 protocols), its server and its InferenceService.

    contract.py   what a request may carry, the limits, and the checks (shared by v1 and v2)
    protocols.py  v1 and v2 (binary extension included) requests and responses <-> the contract
    guard.py      the door: token, no repository API, admission per server and client, body limits,
                  cancellation when the client goes away
    predictor.py  the kserve.Model: loads a model directory, generates in a worker thread
    server.py     the KServe REST server on a chosen host, honest liveness and readiness
    metrics.py    the endpoint's Prometheus metrics
    commands.py   `interactavatar serve` and `interactavatar serve manifest`
    isvc.py       the InferenceService, built from the kserve SDK's models

A model reference (directory, models:/NAME@alias, s3://...) becomes a local directory in
`interactavatar.io.model_refs`. The client that calls the endpoint is
`interactavatar.inference.client`: `generate --endpoint` uses it, and this package depends on
`inference`, not the other way round.
"""
