"""The emulator's device registry and its twins, kept in a state directory.

    DIR/devices.json            {"node1": {"key": "<base64>"}, ...}  (per-device symmetric keys)
    DIR/twins.json              {"node1": {"desired": {..., "$version": n}, "reported": {...}}}
    DIR/telemetry/node1.jsonl   one line per device-to-cloud message, in the order received
    DIR/DEVICE.cs               the device's connection string (HostName=...;DeviceId=...;SharedAccessKey=...)

SAS tokens are checked as IoT Hub does: `sr` is the URL-encoded `{host}/devices/{id}`, `sig` is
base64(HMAC-SHA256(key, sr + "\\n" + se)), `se` is the expiry in Unix seconds.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.parse
from pathlib import Path


def _merge(into: dict, patch: dict) -> None:
    """A twin patch: null deletes a key, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class Registry:
    def __init__(self, state_dir: Path, hostname: str):
        self.dir = Path(state_dir)
        self.hostname = hostname
        (self.dir / "telemetry").mkdir(parents=True, exist_ok=True)
        self._devices_file, self._twins_file = self.dir / "devices.json", self.dir / "twins.json"
        self.devices: dict[str, dict] = json.loads(self._devices_file.read_text()) if self._devices_file.exists() else {}
        self.twins: dict[str, dict] = json.loads(self._twins_file.read_text()) if self._twins_file.exists() else {}

    def add_device(self, device_id: str, key: str | None = None) -> str:
        """Register a device (or keep its key); writes DIR/DEVICE.cs; returns the connection string."""
        entry = self.devices.setdefault(device_id, {"key": key or base64.b64encode(secrets.token_bytes(32)).decode()})
        if key:
            entry["key"] = key
        _write_json(self._devices_file, self.devices)
        self.twins.setdefault(device_id, {"desired": {"$version": 1}, "reported": {"$version": 1}})
        _write_json(self._twins_file, self.twins)
        cs = f"HostName={self.hostname};DeviceId={device_id};SharedAccessKey={entry['key']}"
        (self.dir / f"{device_id}.cs").write_text(cs + "\n")
        return cs

    # --- authentication -----------------------------------------------------------------
    def authenticate(self, client_id: str, username: str | None, password: str | None) -> str | None:
        """None if the device may connect, else the reason (logged by the server, not told to the device)."""
        if client_id not in self.devices:
            return f"unknown device {client_id!r}"
        if not username or username.split("/?")[0] != f"{self.hostname}/{client_id}":
            return f"username {username!r} is not {self.hostname}/{client_id}/?api-version=..."
        if not password or not password.startswith("SharedAccessSignature "):
            return "no SharedAccessSignature password"
        fields = dict(part.split("=", 1) for part in password[len("SharedAccessSignature "):].split("&") if "=" in part)
        sr, sig, se = fields.get("sr", ""), urllib.parse.unquote(fields.get("sig", "")), fields.get("se", "0")
        if urllib.parse.unquote(sr).lower() != f"{self.hostname}/devices/{client_id}".lower():
            return f"token resource {urllib.parse.unquote(sr)!r} is not this device"
        if not se.isdigit() or int(se) < time.time():
            return "token expired"
        key = base64.b64decode(self.devices[client_id]["key"])
        expected = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, sig):
            return "signature does not match the device key"
        return None

    # --- twins ---------------------------------------------------------------------------
    def twin(self, device_id: str) -> dict:
        return json.loads(json.dumps(self.twins[device_id]))

    def patch(self, device_id: str, side: str, patch: dict) -> int:
        """Apply a patch to the desired or reported side; returns that side's new $version."""
        part = self.twins[device_id][side]
        _merge(part, {k: v for k, v in patch.items() if not k.startswith("$")})
        part["$version"] = part.get("$version", 1) + 1
        _write_json(self._twins_file, self.twins)
        return part["$version"]

    # --- telemetry -----------------------------------------------------------------------
    def telemetry_file(self, device_id: str) -> Path:
        return self.dir / "telemetry" / f"{device_id}.jsonl"

    def store_message(self, device_id: str, properties: dict, body: bytes) -> None:
        try:
            payload = json.loads(body.decode("utf-8"))
        except ValueError:
            payload = body.decode("utf-8", errors="replace")
        line = {"received": time.time(), "properties": properties, "body": payload}
        with open(self.telemetry_file(device_id), "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
