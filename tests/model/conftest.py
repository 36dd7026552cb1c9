import pytest
import torch
from helpers.model import randomize_heads

from interactavatar.config import preset
from interactavatar.model import InteractAvatar


@pytest.fixture
def tiny_cfg():
    return preset("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return randomize_heads(InteractAvatar(tiny_cfg)).eval()
