import pytest
from helpers.datasets import make_data_repo


@pytest.fixture(scope="session")
def data_repo(tmp_path_factory):
    """A git + DVC repository of ten tiny-preset clips (see helpers.datasets.make_data_repo). Read-only."""
    return make_data_repo(tmp_path_factory.mktemp("pipeline"))
