import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """One cache for the whole run, never the user's: a converted model is made once per test session."""
    previous = os.environ.get("RANDSAE_CACHE")
    os.environ["RANDSAE_CACHE"] = str(tmp_path_factory.mktemp("randsae-cache"))
    yield
    if previous is None:
        os.environ.pop("RANDSAE_CACHE", None)
    else:
        os.environ["RANDSAE_CACHE"] = previous


@pytest.fixture(autouse=True)
def _seed_global_rng():
    torch.manual_seed(1234)
