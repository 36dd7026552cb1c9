"""`interactavatar pipeline submit` and `schedule`: the real CLI and the real kfp.Client against a
stand-in for the KFP v2beta1 REST API on 127.0.0.1.

The KFP API server cannot run here: it needs a Kubernetes cluster (Argo Workflows, MySQL, MinIO
and its own controllers). The stub answers the endpoints kfp.Client calls for these commands
(healthz, list and create experiments, create a run, create a recurring run) with the shapes of
kfp_server_api's models, and records every request.
"""

import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from helpers.json_stub import JSONStubHandler

from interactavatar.cli import main
from interactavatar.pipeline.commands import COMPILED

REPO = Path(__file__).resolve().parents[2]

DATA_REPO = "https://git.example.com/interactavatar-data.git"


class KFPAPIStub(JSONStubHandler):
    requests: list  # (method, path, query, body), shared by the server's handlers
    experiments: list

    def _record(self, body=None):
        url = urlparse(self.path)
        self.requests.append((self.command, url.path, {k: v[0] for k, v in parse_qs(url.query).items()}, body))
        return url.path

    def do_GET(self):  # noqa: N802
        path = self._record()
        if path == "/apis/v2beta1/healthz":
            return self._answer(200, {"multi_user": False})
        if path == "/apis/v2beta1/experiments":
            wanted = json.loads(self.requests[-1][2]["filter"])["predicates"][0]["stringValue"]
            return self._answer(200, {"experiments": [e for e in self.experiments if e["display_name"] == wanted]})
        self.send_error(404)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self._record(body)
        if path == "/apis/v2beta1/experiments":
            experiment = {**body, "experiment_id": f"experiment-{len(self.experiments) + 1}"}
            self.experiments.append(experiment)
            return self._answer(200, experiment)
        if path == "/apis/v2beta1/runs":
            return self._answer(200, {**body, "run_id": "run-1", "state": "PENDING"})
        if path == "/apis/v2beta1/recurringruns":
            return self._answer(200, {**body, "recurring_run_id": "recurring-1", "status": "ENABLED"})
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api():
    handler = type("Handler", (KFPAPIStub,), {"requests": [], "experiments": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()


def sent(handler, method, path):
    return [body for m, p, _, body in handler.requests if (m, p) == (method, path)]


def compiled_pipeline() -> dict:
    spec, platform = yaml.safe_load_all((REPO / COMPILED).read_text())
    return {"pipeline_spec": spec, "platform_spec": platform}


def test_submit_sends_the_compiled_pipeline_with_typed_parameters(kfp_api, capsys):
    url, api = kfp_api
    code = main(["pipeline", "submit", "--host", url, "--data-repo", DATA_REPO, "--data-rev", "v3",
                 "--param", "preset=tiny", "--param", "pim_steps=50", "--param", "eval_clips=16",
                 "--param", "apply_deployment=false", "--param", "curriculum=0,1,1", "--param", "train_num_nodes=4"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"run_id": "run-1"}  # only the result on stdout
    assert [(m, p) for m, p, _, _ in api.requests] == [
        ("GET", "/apis/v2beta1/healthz"), ("GET", "/apis/v2beta1/experiments"), ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs")]
    (experiment,) = sent(api, "POST", "/apis/v2beta1/experiments")
    assert experiment["display_name"] == "interactavatar"
    (run,) = sent(api, "POST", "/apis/v2beta1/runs")
    assert run["experiment_id"] == "experiment-1"
    assert run["pipeline_spec"] == compiled_pipeline()
    assert run["runtime_config"]["parameters"] == {
        "data_repo": DATA_REPO, "data_rev": "v3", "preset": "tiny", "pim_steps": 50, "eval_clips": 16,
        "apply_deployment": False, "curriculum": "0,1,1", "train_num_nodes": 4}


def test_schedule_creates_a_recurring_run_with_the_six_field_cron(kfp_api, capsys):
    url, api = kfp_api
    api.experiments.append({"experiment_id": "nightly-experiment", "display_name": "nightly"})
    code = main(["pipeline", "schedule", "--host", url, "--data-repo", DATA_REPO, "--cron", "0 0 3 * * *",
                 "--experiment", "nightly", "--param", "data_rev=3"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"recurring_run_id": "recurring-1"}
    assert sent(api, "POST", "/apis/v2beta1/experiments") == []  # the existing experiment is reused
    (recurring,) = sent(api, "POST", "/apis/v2beta1/recurringruns")
    assert recurring["experiment_id"] == "nightly-experiment"
    assert recurring["display_name"] == "interactavatar-retraining"
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert recurring["mode"] == "ENABLE" and recurring["no_catchup"] is True and recurring["max_concurrency"] == 1
    assert recurring["pipeline_spec"] == compiled_pipeline()
    # data_rev is a String parameter: "3" stays a string. A recurring run retrains the champion.
    assert recurring["runtime_config"]["parameters"] == {"data_repo": DATA_REPO, "data_rev": "3",
                                                         "init_model": "champion"}


@pytest.mark.parametrize(("arguments", "error"), [
    (["schedule", "--cron", "0 3 * * *"], "--cron '0 3 * * *': KFP cron expressions have six fields, seconds first"),
    (["submit", "--param", "pim_step=50"], "--param pim_step: not a parameter of the pipeline; it has data_repo, "),
    (["submit", "--param", "pim_steps=many"], "--param pim_steps='many': expected Integer"),
    (["submit", "--param", "apply_deployment=yes"], "--param apply_deployment='yes': expected Boolean"),
])
def test_bad_arguments_are_refused_by_name_before_any_request(kfp_api, capsys, arguments, error):
    url, api = kfp_api
    command, *rest = arguments
    assert main(["pipeline", command, "--host", url, "--data-repo", DATA_REPO, *rest]) == 2
    assert error in capsys.readouterr().err
    assert api.requests == []


def test_a_local_data_repository_is_refused_for_a_cluster_run(kfp_api, capsys, tmp_path):
    url, api = kfp_api
    assert main(["pipeline", "submit", "--host", url, "--data-repo", str(tmp_path)]) == 2
    assert "is a path on this machine; the cluster needs a git URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --data-repo is required
        main(["pipeline", "submit", "--host", url])
    assert api.requests == []
