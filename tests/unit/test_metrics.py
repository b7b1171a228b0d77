"""The Prometheus endpoint: served over real HTTP on 127.0.0.1 and parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.codec.enums import PortState
from controlplane.services import api as A
from controlplane.services import metrics

_spec = importlib.util.spec_from_file_location("_grpc_api_fixtures", pathlib.Path(__file__).with_name("test_grpc_api.py"))
assert _spec and _spec.loader
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
MemoryBackend = _mod.MemoryBackend


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict, name: str, **labels: str) -> float:
    fam = fams[name]
    for s in fam.samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name}{labels}")


def test_render_parses_and_carries_the_values() -> None:
    backend = MemoryBackend()
    backend.states["p1"] = PortState.SLAVE
    api = A.ControlApi(backend)
    fams = _families(metrics.render(api))
    assert _value(fams, "ptp_switch_offset_from_master_ns") == -42
    assert _value(fams, "ptp_switch_mean_path_delay_ns") == 1500
    assert _value(fams, "ptp_switch_frequency_adjustment_ppb") == 12.5
    assert _value(fams, "ptp_switch_port_state", port="p1", state="SLAVE") == 1
    assert _value(fams, "ptp_switch_port_state", port="p1", state="MASTER") == 0
    assert _value(fams, "ptp_switch_port_state_code", port="p2") == int(PortState.LISTENING)
    assert fams["ptp_switch_dataplane"].type == "counter"
    assert _value(fams, "ptp_switch_dataplane", port="p2", counter="rx_event") == 10
    assert _value(fams, "ptp_switch_unicast_grants", port="p1", role="SERVER", message_type="Sync") == 1
    assert _value(fams, "ptp_switch_clock_info", clock_type="E2E_TC") == 1


def test_label_values_are_escaped() -> None:
    backend = MemoryBackend(names=('we"ird\\port',))
    text = metrics.render(A.ControlApi(backend))
    fams = _families(text)
    assert _value(fams, "ptp_switch_port_enabled", port='we"ird\\port') == 1


def test_http_endpoint_on_loopback() -> None:
    api = A.ControlApi(MemoryBackend())

    async def run() -> tuple[str, str, int]:
        handle = await metrics.start(api, "127.0.0.1:0")
        try:
            loop = asyncio.get_running_loop()

            def fetch(path: str) -> tuple[str, str]:
                with urllib.request.urlopen(f"http://127.0.0.1:{handle.port}{path}", timeout=10) as r:
                    return r.read().decode(), r.headers["Content-Type"]

            body, ctype = await loop.run_in_executor(None, fetch, "/metrics")
            try:
                await loop.run_in_executor(None, fetch, "/nope")
                code = 200
            except urllib.error.HTTPError as exc:
                code = exc.code
            return body, ctype, code
        finally:
            await handle.stop()

    body, ctype, code = asyncio.run(run())
    assert ctype.startswith("text/plain; version=0.0.4")
    assert _value(_families(body), "ptp_switch_steps_removed") == 1
    assert code == 404


@pytest.mark.parametrize("addr", ["0.0.0.0:9469", "[::]:9469", "10.1.2.3:9469", ":9469"])
def test_refuses_non_loopback_by_default(addr: str) -> None:
    with pytest.raises(metrics.MetricsAddressError):
        metrics.parse_address(addr)


def test_address_defaults() -> None:
    assert metrics.parse_address(None) == ("127.0.0.1", 9469)
    assert metrics.parse_address("9500") == ("127.0.0.1", 9500)
    assert metrics.parse_address("[::1]:9500") == ("::1", 9500)
    assert metrics.parse_address("10.1.2.3:9469", allow_remote=True) == ("10.1.2.3", 9469)
