"""Signals registry endpoints (signals-api §1.1–1.6), paths exactly as the SDK builds them.

Collection paths end in ``/``, item paths do not; the app runs with ``redirect_slashes=False``
because the SDK (httpx) does not follow redirects. Creates answer 201, everything else 200,
always with a JSON body (DELETE: ``{"ok": true}``). Every route needs an API token. Storage
goes through ``SignalsCatalog`` (the Redis registry), so running workers hot-reload.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from processor.api.auth import require_token
from processor.api.signals_errors import json_object, translated
from processor.domain.definitions import (
    AttributeKey,
    LinkAttributeKey,
    attribute_group_response,
    blobl_path,
    to_wire,
)
from processor.errors import DefinitionError
from processor.publishing import SignalsCatalog
from processor.state.registry import Registry

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])
R = "/registry"
OK = {"ok": True}


def _catalog(request: Request) -> SignalsCatalog:
    return SignalsCatalog(Registry(request.app.state.redis))


Catalog = Depends(_catalog)
Body = Depends(json_object)


def _key_body(key: AttributeKey) -> dict[str, Any]:
    """``AttributeKeyOutput``: the key plus its (nullable, required) ``blobl_path``."""
    return to_wire(key) | {"blobl_path": blobl_path(key)}


# -- attribute keys (§1.1) -------------------------------------------------------------------


@router.get(f"{R}/attribute_keys/")
async def list_attribute_keys(catalog: SignalsCatalog = Catalog) -> list[dict[str, Any]]:
    return [_key_body(k) for k in await catalog.attribute_keys()]


@router.post(f"{R}/attribute_keys/", status_code=201)
async def create_attribute_key(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return _key_body(await catalog.put_attribute_key(doc, create=True))


@router.get(f"{R}/attribute_keys/{{name}}")
async def get_attribute_key(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, Any]:
    with translated():
        return _key_body(await catalog.attribute_key(name))


@router.put(f"{R}/attribute_keys/{{name}}")
async def put_attribute_key(
    name: str, doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return _key_body(await catalog.put_attribute_key(doc, create=False, name=name))


@router.delete(f"{R}/attribute_keys/{{name}}")
async def delete_attribute_key(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, bool]:
    with translated():
        await catalog.delete_attribute_key(name)
    return OK


# -- attribute groups (§1.2) -----------------------------------------------------------------


@router.get(f"{R}/attribute_groups/")
async def list_attribute_groups(
    applied: bool = False, catalog: SignalsCatalog = Catalog
) -> list[dict[str, Any]]:
    """Every stored version (``?applied=true``: only published ones), as AttributeGroupResponse."""
    groups = sorted(await catalog.groups(), key=lambda g: (g.name, g.version))
    return [attribute_group_response(g) for g in groups if g.is_published or not applied]


@router.post(f"{R}/attribute_groups/", status_code=201)
async def create_attribute_group(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.put_group(doc, create=True))


@router.get(f"{R}/attribute_groups/{{name}}")
async def get_latest_attribute_group(
    name: str, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return attribute_group_response(await catalog.group(name))


@router.get(f"{R}/attribute_groups/{{name}}/versions/{{version}}")
async def get_attribute_group(
    name: str, version: int, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return attribute_group_response(await catalog.group(name, version))


@router.put(f"{R}/attribute_groups/{{name}}/versions/{{version}}")
async def put_attribute_group(
    name: str, version: int, doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        group = await catalog.put_group(doc, create=False, name=name, version=version)
    return to_wire(group)


@router.delete(f"{R}/attribute_groups/{{name}}/versions/{{version}}")
async def delete_attribute_group(
    name: str, version: int, catalog: SignalsCatalog = Catalog
) -> dict[str, bool]:
    with translated():
        await catalog.delete_group(name, version)
    return OK


# -- services (§1.3) -------------------------------------------------------------------------


@router.get(f"{R}/services/")
async def list_services(catalog: SignalsCatalog = Catalog) -> list[dict[str, Any]]:
    return [to_wire(s) for s in sorted(await catalog.services(), key=lambda s: s.name)]


@router.post(f"{R}/services/", status_code=201)
async def create_service(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.put_service(doc, create=True))


@router.get(f"{R}/services/{{name}}")
async def get_service(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.service(name))


@router.put(f"{R}/services/{{name}}")
async def put_service(
    name: str, doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.put_service(doc, create=False, name=name))


@router.delete(f"{R}/services/{{name}}")
async def delete_service(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, bool]:
    with translated():
        await catalog.delete_service(name)
    return OK


# -- rule interventions (§1.4): definitions only; the runtime lives elsewhere ----------------


@router.get(f"{R}/interventions/")
async def list_interventions(catalog: SignalsCatalog = Catalog) -> list[dict[str, Any]]:
    return [to_wire(i) for i in await catalog.interventions()]


@router.post(f"{R}/interventions/", status_code=201)
async def create_intervention(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.put_intervention(doc, create=True))


@router.get(f"{R}/interventions/{{name}}")
async def get_latest_intervention(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.intervention(name))


@router.get(f"{R}/interventions/{{name}}/versions/{{version}}")
async def get_intervention(
    name: str, version: int, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.intervention(name, version))


@router.put(f"{R}/interventions/{{name}}/versions/{{version}}")
async def put_intervention(
    name: str, version: int, doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        intervention = await catalog.put_intervention(doc, create=False, name=name, version=version)
    return to_wire(intervention)


@router.delete(f"{R}/interventions/{{name}}/versions/{{version}}")
async def delete_intervention(
    name: str, version: int, catalog: SignalsCatalog = Catalog
) -> dict[str, bool]:
    with translated():
        await catalog.delete_intervention(name, version)
    return OK


# -- event logs ("agentic contexts", §1.5) ---------------------------------------------------


@router.get(f"{R}/event_logs/")
async def list_event_logs(request: Request) -> list[dict[str, Any]]:
    docs = await Registry(request.app.state.redis).all("event_logs")
    return [docs[name] for name in sorted(docs)]


@router.post(f"{R}/event_logs/", status_code=201)
async def create_event_log(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.put_event_log(doc, create=True))


@router.get(f"{R}/event_logs/{{name}}")
async def get_event_log(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, Any]:
    """``EventLogResponse``: the definition plus ``is_published`` and ``has_published_version``."""
    with translated():
        return await catalog.event_log(name)


@router.put(f"{R}/event_logs/{{name}}")
async def put_event_log(
    name: str, doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, Any]:
    with translated():
        return to_wire(await catalog.put_event_log(doc, create=False, name=name))


@router.delete(f"{R}/event_logs/{{name}}")
async def delete_event_log(name: str, catalog: SignalsCatalog = Catalog) -> dict[str, bool]:
    with translated():
        await catalog.delete_event_log(name)
    return OK


@router.post("/engines/publish")
async def engines_publish(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, str]:
    """``SelectivePublishRequest``; 0.4.10 only sends ``event_logs`` (other kinds publish
    through their registry PUT with ``is_published``)."""
    with translated():
        changed = await catalog.set_event_logs_published(_event_log_names(doc), True)
    return {"status": "published" if changed else "nothing to publish"}


@router.post("/engines/unpublish")
async def engines_unpublish(
    doc: dict[str, Any] = Body, catalog: SignalsCatalog = Catalog
) -> dict[str, str]:
    with translated():
        changed = await catalog.set_event_logs_published(_event_log_names(doc), False)
    return {"status": "unpublished" if changed else "nothing to unpublish"}


def _event_log_names(doc: dict[str, Any]) -> list[str]:
    links = doc.get("event_logs") or []
    if not isinstance(links, list):
        raise DefinitionError("event_logs must be a list of {name}")
    try:
        return [LinkAttributeKey.model_validate(link).name for link in links]
    except ValueError:
        raise DefinitionError("event_logs must be a list of {name}") from None
