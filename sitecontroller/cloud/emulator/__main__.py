"""hub-emulator: a local IoT Hub (device protocol over MQTT/TLS and WSS) to try the cloud side without Azure.

    hub-emulator --dir var/hub serve --device node1          # writes var/hub/node1.cs and var/hub/ca.pem
    hub-emulator --dir var/hub invoke node1 GoToState_Running '{}'
    hub-emulator --dir var/hub desired node1 '{"parameters": {"cloud": {"telemetry_interval_s": 5}}}'
    hub-emulator --dir var/hub twin node1
    hub-emulator --dir var/hub telemetry node1 --follow

A node uses it with a `cloud` section naming those files: {"connection_string_file": "var/hub/node1.cs",
"ca_cert_file": "var/hub/ca.pem"} (relative to the parameter file). The state directory keeps the CA,
the device keys, the twins and the telemetry across restarts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _serve(args) -> int:
    from .hub import HubEmulator

    async def main() -> None:
        hub = HubEmulator(args.dir, args.host, mqtt_port=args.mqtt_port,
                          wss_port=None if args.wss_port == 0 else args.wss_port, admin_port=args.admin_port,
                          hostname=args.hostname)
        for device in args.device:
            hub.registry.add_device(device)
            print(f"device {device}: connection string in {Path(args.dir) / (device + '.cs')}", flush=True)
        await hub.start()
        print(f"IoT Hub emulator listening on {args.host}:{args.mqtt_port} (MQTT/TLS); CA: {hub.ca_file}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await hub.stop()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main())
    return 0


def _call(args, method: str, path: str, body=None):
    try:
        url = json.loads((Path(args.dir) / "admin.json").read_text())["url"]
    except (OSError, ValueError, KeyError):
        sys.exit(f"hub-emulator: no running emulator found in {args.dir} (start it with `serve`)")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout + 5 if hasattr(args, "timeout") else 10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        sys.exit(f"hub-emulator: {exc.code} {exc.read().decode(errors='replace')}")
    except OSError as exc:
        sys.exit(f"hub-emulator: the emulator at {url} does not answer ({exc})")


def _json_arg(text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        sys.exit(f"hub-emulator: not JSON: {text!r} ({exc})")


def _invoke(args) -> int:
    answer = _call(args, "POST", f"/devices/{args.device}/methods/{args.method}?timeout={args.timeout}",
                   _json_arg(args.payload))
    print(json.dumps(answer, indent=2))
    return 0 if 200 <= answer["status"] < 300 else 1


def _desired(args) -> int:
    print(json.dumps(_call(args, "PATCH", f"/devices/{args.device}/twin/desired", _json_arg(args.patch))))
    return 0


def _twin(args) -> int:
    print(json.dumps(_call(args, "GET", f"/devices/{args.device}/twin"), indent=2))
    return 0


def _telemetry(args) -> int:
    path = Path(args.dir) / "telemetry" / f"{args.device}.jsonl"
    at = 0
    while True:
        if path.exists():
            with open(path, encoding="utf-8") as f:
                f.seek(at)
                for line in f:
                    if line.endswith("\n"):
                        print(line, end="", flush=True)
                at = f.tell()
        if not args.follow:
            return 0
        time.sleep(0.5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hub-emulator", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dir", default="var/hub", help="state directory: CA, devices, twins, telemetry (default var/hub)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the emulator until Ctrl-C")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (and HostName of the devices)")
    s.add_argument("--hostname", default=None, help="HostName in connection strings (default: --host)")
    s.add_argument("--device", action="append", default=[], help="register this device (repeatable)")
    s.add_argument("--mqtt-port", type=int, default=8883, help="MQTT/TLS port (the SDK uses 8883)")
    s.add_argument("--wss-port", type=int, default=443, help="MQTT over WSS port (the SDK uses 443); 0: none")
    s.add_argument("--admin-port", type=int, default=0, help="operator API port (default: any free one)")
    s.set_defaults(func=_serve)
    s = sub.add_parser("invoke", help="call a direct method and print the answer")
    s.add_argument("device")
    s.add_argument("method")
    s.add_argument("payload", nargs="?", default="{}", help="JSON payload (default {})")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the device (default 30)")
    s.set_defaults(func=_invoke)
    s = sub.add_parser("desired", help="patch the desired properties of a device twin")
    s.add_argument("device")
    s.add_argument("patch", help='JSON object, e.g. {"parameters": {...}}')
    s.set_defaults(func=_desired)
    s = sub.add_parser("twin", help="print a device twin")
    s.add_argument("device")
    s.set_defaults(func=_twin)
    s = sub.add_parser("telemetry", help="print the messages a device sent, oldest first")
    s.add_argument("device")
    s.add_argument("--follow", action="store_true", help="keep printing new ones")
    s.set_defaults(func=_telemetry)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
