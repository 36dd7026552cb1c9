import pytest
from data_repo import make_data_repo


@pytest.fixture(scope="session")
def data_repo(tmp_path_factory):
    return make_data_repo(tmp_path_factory.mktemp("pipeline"))
