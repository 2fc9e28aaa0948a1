"""The emulator's operator API (plain HTTP on its own loopback address; what `hub-emulator invoke`,
`desired` and `twin` call). Like the IoT Hub service API, minus its authentication:

    POST  /devices/{id}/methods/{name}?timeout=S   body: the method payload -> {"status", "payload"}
    PATCH /devices/{id}/twin/desired               body: a desired patch    -> {"$version"}
    GET   /devices/{id}/twin                       the whole twin
    POST  /devices/{id}/link?cut=1|0               cut (simulated outage) or restore one device's link
"""
from __future__ import annotations

import json

from aiohttp import web


async def _body(request: web.Request):
    try:
        return json.loads(await request.text() or "null")
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {exc}") from None


def _device(hub, request: web.Request) -> str:
    device_id = request.match_info["device"]
    if device_id not in hub.registry.devices:
        raise web.HTTPNotFound(text=f"device {device_id!r} is not registered")
    return device_id


def admin_app(hub) -> web.Application:
    async def invoke(request: web.Request) -> web.Response:
        device_id = request.match_info["device"]
        try:
            timeout_s = float(request.query.get("timeout", "30"))
        except ValueError:
            raise web.HTTPBadRequest(text="timeout: a number of seconds") from None
        status, payload = await hub.invoke(device_id, request.match_info["method"], await _body(request), timeout_s)
        return web.json_response({"status": status, "payload": payload})

    async def desired(request: web.Request) -> web.Response:
        device_id = _device(hub, request)
        patch = await _body(request)
        if not isinstance(patch, dict):
            raise web.HTTPBadRequest(text="a desired patch is a JSON object")
        return web.json_response({"$version": await hub.set_desired(device_id, patch)})

    async def twin(request: web.Request) -> web.Response:
        return web.json_response(hub.registry.twin(_device(hub, request)))

    async def link(request: web.Request) -> web.Response:
        device_id = _device(hub, request)
        hub.cut_link(device_id, request.query.get("cut", "1") == "1")
        return web.json_response({"cut": device_id in hub.cut_off})

    app = web.Application()
    app.router.add_post("/devices/{device}/link", link)
    app.router.add_post("/devices/{device}/methods/{method}", invoke)
    app.router.add_patch("/devices/{device}/twin/desired", desired)
    app.router.add_get("/devices/{device}/twin", twin)
    return app
