import shutil

import pytest

from tests.conftest import REPO
from tests.e2e.cloud import make_cloud


@pytest.fixture(scope="session")
def live_cloud(testvm_image):
    """A running cloud with real VMs, shared by the e2e tests of one session."""
    cloud = make_cloud(REPO / "var" / "e2e")
    try:
        cloud.start(testvm_image)
        yield cloud
    except Exception:
        print(cloud.log_tail())
        raise
    finally:
        cloud.stop()
        shutil.rmtree(cloud.data_dir, ignore_errors=True)


@pytest.fixture
def api(live_cloud):
    """(cloud, admin token) for API calls."""
    return live_cloud, live_cloud.token()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.libvirt)
