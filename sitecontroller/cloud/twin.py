"""Device twin desired `parameters` ↔ site parameters.

The desired `{"parameters": {...}}` is a partial site-parameter document (an *overlay* on the
parameter file). A change is validated as a whole (file ⊕ overlay, the same validation as
`check-params`): if anything is wrong, nothing is applied and the status says which field. If valid,
the keys that may change at run time (`live_params.RUNTIME_KEYS`: safety, staleness, pid, telemetry,
cloud.telemetry_interval_s) are put in effect at once, through the node's `apply_parameters` command
(carried out between two cycles, audited), and the rest is staged: it takes effect at the next start,
and the status says `staged` with the keys that need a restart (and those applied now). What is in
effect is the node's `params`; the twin compares each change with it.

Versions: a patch is applied only on top of the version before it; an older version never overwrites
a newer one; a gap (a patch lost while offline, or out of order) makes the client read the whole
twin again. The last valid overlay is cached in the data directory (`cloud/desired.json`) once its
run-time part is in effect, and `with_cached` lays it over the parameter file at start, so a node
starts as the cloud left it even without the cloud.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path

from .. import live_params
from .. import params as site_params
from ..commands import DONE
from ..live_params import merge

log = logging.getLogger("sitecontroller.cloud")

APPLIED, STAGED, REJECTED = "applied", "staged", "rejected"
APPLY_WITHIN_S = 10.0  # the node carries a change out at its next cycle (100 ms); this is the far bound


def _cache_file(params) -> Path:
    return Path(params.data_dir) / "cloud" / "desired.json"


def with_cached(params):
    """The parameter file's parameters with the cached desired overlay laid over them (if it is still valid)."""
    try:
        cached = json.loads(_cache_file(params).read_text())
        return site_params.parse(merge(params.model_dump(mode="json"), cached["parameters"]), "cached desired parameters")
    except FileNotFoundError:
        return params
    except (ValueError, KeyError, TypeError, site_params.ParamsError) as exc:
        log.warning("cached desired parameters ignored (%s): running with the parameter file's", exc)
        return params


class ParameterTwin:
    def __init__(self, node):
        self.node = node
        self.file_doc = node.params.model_dump(mode="json")  # what the node started with (file ⊕ cache)
        self._lock = asyncio.Lock()  # one change at a time, in the order they arrive
        cache = _cache_file(node.params)
        try:
            cached = json.loads(cache.read_text())
            self.overlay, self.version = cached["parameters"], cached.get("version", 0)
        except (OSError, ValueError, KeyError):
            self.overlay, self.version = {}, 0
        self.status = {"desired_version": self.version, "status": APPLIED, "detail": "parameter file"}

    async def desired_twin(self, desired: dict) -> bool:
        """The whole desired side (after a connect): applied if newer than what we have."""
        async with self._lock:
            version = desired.get("$version", 0)
            if version <= self.version:
                return False
            await self._change(desired.get("parameters") or {}, version, replace=True)
            return True

    async def desired_patch(self, patch: dict) -> str:
        """One desired patch: 'applied' (or staged/rejected), 'old' (ignored) or 'gap' (read the whole twin).
        Patches wait for the one being applied, so each is checked against the version before it."""
        async with self._lock:
            version = patch.get("$version", 0)
            if version <= self.version:
                log.info("desired patch version %s is not newer than %s: ignored", version, self.version)
                return "old"
            if version != self.version + 1:
                return "gap"
            if "parameters" not in patch:
                self.version = version
                self.status = dict(self.status, desired_version=version)
                return self.status["status"]
            await self._change(patch["parameters"] or {}, version, replace=False)
            return self.status["status"]

    async def setup_device(self, doc: dict, origin: str) -> tuple[str, str]:
        async with self._lock:
            await self._change(doc, self.version, replace=False, origin=origin)
            return self.status["status"], self.status["detail"]

    async def _change(self, parameters, version: int, *, replace: bool, origin: str = "desired") -> None:
        """Validate file ⊕ overlay as a whole; put its run-time part in effect, stage the rest, or reject
        it all (the caller holds the lock)."""
        if not isinstance(parameters, dict):
            self._set(version, REJECTED, "$.parameters: must be a JSON object (a partial site-parameter document)")
            return
        overlay = parameters if replace else merge(self.overlay, parameters)
        try:
            new = site_params.parse(merge(self.file_doc, overlay), origin)
        except site_params.ParamsError as exc:
            self._set(version, REJECTED, "; ".join(exc.problems) + ": nothing applied")
            return
        live, staged = live_params.split(self.node.params, new)  # compared with what is in effect
        note = ""
        if live:
            what = f"{origin} version {version}" if origin == "desired" else origin
            ack = await self._apply({key: value for key, (_, value) in live.items()}, what)
            if ack.final and ack.status != DONE:
                self._set(version, REJECTED, ack.detail if ack.detail.endswith("nothing applied")
                          else f"{ack.detail}: nothing applied")
                return
            if not ack.final:  # queued: carried out at the node's next cycle (or failed as it stops)
                note = " (the node carries it out at its next cycle)"
        self.overlay = overlay
        await asyncio.to_thread(self._write_cache, version)
        applied = ", ".join(sorted(live)) + note
        if staged:
            self._set(version, STAGED, f"needs a restart: {', '.join(staged)}"
                      + (f"; applied now: {applied}" if live else ""))
        else:
            self._set(version, APPLIED, f"applied: {applied if live else 'no change'}")

    async def _apply(self, values: dict, origin: str):
        """The run-time part as an `apply_parameters` command; its final ack (or the current one after
        APPLY_WITHIN_S)."""
        commands = self.node.commands
        ack = commands.submit({"id": f"params-{uuid.uuid4().hex}", "type": "apply_parameters", "source": "cloud",
                               "parameters": live_params.document(values), "origin": origin[:200]})
        return ack if ack.final else await commands.wait_final(ack.id, APPLY_WITHIN_S)

    def _set(self, version: int, status: str, detail: str) -> None:
        self.version = max(self.version, version)
        self.status = {"desired_version": version, "status": status, "detail": detail}
        (log.warning if status == REJECTED else log.info)("desired parameters (version %s) %s: %s", version, status, detail)

    def _write_cache(self, version: int) -> None:
        path = _cache_file(self.node.params)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": version, "parameters": self.overlay}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def reported(self) -> dict:
        return {"parameters": self.overlay, "parameters_status": self.status}

