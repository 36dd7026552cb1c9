"""The model server is ready only once its model is loaded, and live only while it is loaded or
loading: a server whose model is gone is one for Kubernetes to restart.

In-process, on the data plane: over HTTP the model cannot be taken away any more (the repository
API is refused, tests/serve/test_endpoint_hardening.py), so this is where losing it is staged.
"""

import asyncio

import pytest
from kserve.errors import ServerNotLive
from kserve.model_repository import ModelRepository

from interactavatar.serve.predictor import InteractAvatarModel
from interactavatar.serve.server import ServingDataPlane


def test_server_is_ready_only_once_the_model_is_loaded(model_dir):
    repository = ModelRepository()
    model = InteractAvatarModel("interactavatar", str(model_dir))
    repository.update(model)
    dataplane = ServingDataPlane(model_registry=repository)
    model.start()  # kserve's default would mark it ready here
    assert not asyncio.run(dataplane.ready())
    model.load()
    assert asyncio.run(dataplane.ready())


def test_server_is_live_while_its_model_loads_or_serves_and_not_after(model_dir, tmp_path):
    repository = ModelRepository()
    model = InteractAvatarModel("interactavatar", str(model_dir))
    repository.update(model)
    dataplane = ServingDataPlane(model_registry=repository)
    assert asyncio.run(dataplane.live()) == {"status": "alive"}  # loading
    model.load()
    assert asyncio.run(dataplane.live()) == {"status": "alive"}
    model.stop()  # what kserve's unload does first...
    with pytest.raises(ServerNotLive):
        asyncio.run(dataplane.live())
    repository.unload("interactavatar")  # ...before it drops the model: no model at all
    with pytest.raises(ServerNotLive):
        asyncio.run(dataplane.live())

    broken = InteractAvatarModel("interactavatar", str(tmp_path / "no-model"))
    with pytest.raises(FileNotFoundError):
        broken.load()
    repository.update(broken)
    with pytest.raises(ServerNotLive):
        asyncio.run(dataplane.live())
