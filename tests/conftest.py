pytest_plugins = [
    "tests.harness.fixtures",
    "tests.harness.stemkube",
    "tests.harness.separator_fixtures",
    "tests.harness.api",
    "tests.harness.service",
]
