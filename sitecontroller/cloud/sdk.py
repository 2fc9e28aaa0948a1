"""The azure-iot-device names the cloud service uses, imported without charset_normalizer (about 3 MB RSS less).

`azure.iot.device` imports its HTTP pipeline (`common/http_transport.py`, for module-to-module method calls
and blob uploads, which this device client never makes), and with it `requests`, which loads a character-set
detector (`charset_normalizer`: about 3 MB of tables and compiled modules) to guess the encoding of a
response that does not declare one. Nothing in the node uses requests, so the SDK is first imported as if
no detector were installed, the case requests supports: it then decodes such a body as UTF-8 (and warns
once at import that it has no detector; that warning is silenced here). If requests or charset_normalizer
is already loaded when this runs (a test process, say), the import is the plain one and nothing changes.
charset_normalizer itself stays importable afterwards.

Import every SDK name through this module, so that the SDK's first import is this one.
"""
from __future__ import annotations

import sys
import warnings

if not {"azure.iot.device", "requests", "charset_normalizer"} & sys.modules.keys():
    sys.modules["charset_normalizer"] = None  # type: ignore[assignment]  (`import charset_normalizer` -> ImportError)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency")
            import azure.iot.device  # noqa: F401
    finally:
        if "charset_normalizer" in sys.modules and sys.modules["charset_normalizer"] is None:
            del sys.modules["charset_normalizer"]

from azure.iot.device import Message, MethodResponse  # noqa: E402
from azure.iot.device.aio import IoTHubDeviceClient  # noqa: E402
from azure.iot.device.exceptions import ConnectionFailedError, CredentialError  # noqa: E402

__all__ = ["ConnectionFailedError", "CredentialError", "IoTHubDeviceClient", "Message", "MethodResponse"]
