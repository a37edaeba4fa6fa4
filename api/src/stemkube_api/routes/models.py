"""The models this deployment serves."""

from fastapi import APIRouter, Depends

from stemkube_api.auth.dependency import current_caller
from stemkube_api.errors import error_responses
from stemkube_api.models import ModelList
from stemkube_api.services import ServicesDep

router = APIRouter(tags=["models"], dependencies=[Depends(current_caller)])


@router.get(
    "/models",
    response_model=ModelList,
    responses=error_responses(401, 429),
    summary="The models this deployment serves, their stems, and the default",
)
async def models(services: ServicesDep) -> ModelList:
    return ModelList.of(services.settings.models)
