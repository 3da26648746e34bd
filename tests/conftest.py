pytest_plugins = ["tests.kafka_fixtures", "tests.model_fixtures"]


def pytest_collection_modifyitems(config, items):
    """Slow tests (full-corpus training, long soaks) run only when ``-m`` names them.

    pyproject's ``-m 'not slow'`` is replaced by any ``-m`` on the command line, so
    ``-m "not kafka"`` alone would otherwise start a 25-minute training.
    """
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
