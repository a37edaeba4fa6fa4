"""The models this deployment serves."""

from fastapi import APIRouter

from stemkube_api.models import ModelList
from stemkube_api.services import ServicesDep

router = APIRouter(tags=["models"])


@router.get(
    "/models",
    response_model=ModelList,
    summary="The models this deployment serves, their stems, and the default",
)
async def models(services: ServicesDep) -> ModelList:
    return ModelList.of(services.settings.models)
