pytest_plugins = ["tests.kafka_fixtures", "tests.model_fixtures"]
