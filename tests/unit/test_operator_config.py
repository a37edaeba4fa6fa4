"""The operator's configuration from its environment."""

import pytest

from stemkube_operator.config import ConfigError, load_config


def test_defaults() -> None:
    config = load_config({})
    assert config.gpu_resource == "nvidia.com/gpu"
    assert config.gpu_count == 1
    assert config.max_running == 0
    assert config.namespaces == ()


def test_values_from_the_environment() -> None:
    config = load_config(
        {
            "STEMKUBE_GPU_COUNT": "0",
            "STEMKUBE_NODE_SELECTOR": '{"pool": "gpu"}',
            "STEMKUBE_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
            "STEMKUBE_NAMESPACES": "music, podcasts",
            "STEMKUBE_MAX_RUNNING": "4",
            "AWS_ENDPOINT_URL": "http://minio:9000",
        }
    )
    assert config.gpu_count == 0
    assert config.node_selector == {"pool": "gpu"}
    assert config.tolerations[0]["key"] == "gpu"
    assert config.namespaces == ("music", "podcasts")
    assert config.max_running == 4
    assert config.s3_endpoint == "http://minio:9000"
    assert load_config({"STEMKUBE_PRECISION": "bf16"}).precision == "bf16"
    assert load_config({}).precision == "auto"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"STEMKUBE_GPU_COUNT": "one"}, "STEMKUBE_GPU_COUNT"),
        ({"STEMKUBE_MAX_RUNNING": "-1"}, "STEMKUBE_MAX_RUNNING"),
        ({"STEMKUBE_NODE_SELECTOR": "[1]"}, "STEMKUBE_NODE_SELECTOR"),
        ({"STEMKUBE_TOLERATIONS": "{"}, "STEMKUBE_TOLERATIONS"),
        ({"STEMKUBE_PRECISION": "fp8"}, "STEMKUBE_PRECISION"),
        ({"STEMKUBE_LIMITS": '{"shifts": 99}'}, "STEMKUBE_LIMITS"),
        ({"STEMKUBE_MODELS": "[{}]"}, "models"),
        ({"STEMKUBE_MODEL": "spleeter"}, "STEMKUBE_MODEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(env)
