"""The model server is ready only once its model is loaded."""

import asyncio

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
