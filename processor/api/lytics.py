"""(being written) FastAPI routes; see processor/api/app.py."""

from fastapi import APIRouter

router = APIRouter()
