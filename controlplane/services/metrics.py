"""Prometheus text exposition (format 0.0.4) of the clock, ports, dataplane counters and grants.

Off by default. When the daemon turns it on (``--metrics [ADDR]``), it listens on
127.0.0.1:9469 unless told otherwise; a non-loopback address needs ``allow_remote=True``::

    handle = await metrics.start(api, "127.0.0.1:9469")   # api: ControlApi
    ...
    await handle.stop()

``render(api)`` is the pure part (snapshots in, text out); the server is a minimal asyncio HTTP/1.0
responder for ``GET /metrics`` on the daemon's loop. Every value comes from the same snapshots the
gRPC API serves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
from dataclasses import dataclass
from typing import Iterable

from controlplane.codec.enums import PortState
from controlplane.services.api import ApiError, ControlApi

__all__ = ["DEFAULT_ADDRESS", "MetricsAddressError", "MetricsHandle", "render", "start"]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:9469"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MTYPE = {0x0: "Sync", 0x3: "Pdelay_Resp", 0x9: "Delay_Resp", 0xB: "Announce"}


class MetricsAddressError(ValueError):
    """A malformed or refused metrics listen address."""


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float | int | bool) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, object], float | int | bool]],
               ) -> None:
        samples = list(samples)
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{'{' + lab + '}' if lab else ''} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


_COUNTER_KEY = re.compile(r"^([A-Z][A-Z0-9_]*)_([a-z][a-z0-9_]*)$")


def _counter_labels(key: str) -> dict[str, str]:
    """The loader's flattened ``SYNC_corrected`` -> message_type SYNC, counter corrected."""
    m = _COUNTER_KEY.match(key)
    return {"message_type": m.group(1), "counter": m.group(2)} if m else {"message_type": "", "counter": key}


def render(api: ControlApi) -> str:
    """The exposition text for the daemon behind ``api`` right now."""
    w = _Writer()
    clock = api.get_clock()
    ports = api.list_ports()
    try:
        grants = api.list_grants()
    except ApiError:
        grants = []
    cur, par, d = clock.current_ds, clock.parent_ds, clock.default_ds
    w.family("ptp_switch_clock_info", "gauge", "Constant 1; labels identify the clock and its grandmaster.",
             [({"clock_identity": d.clock_identity, "clock_type": d.clock_type, "domain": d.domain_number,
                "grandmaster_identity": par.grandmaster_identity, "servo_state": clock.servo_state}, 1)])
    w.family("ptp_switch_offset_from_master_ns", "gauge", "currentDS.offsetFromMaster in nanoseconds.",
             [({}, cur.offset_from_master_ns)])
    w.family("ptp_switch_mean_path_delay_ns", "gauge", "currentDS.meanPathDelay in nanoseconds.",
             [({}, cur.mean_path_delay_ns)])
    w.family("ptp_switch_steps_removed", "gauge", "currentDS.stepsRemoved.", [({}, cur.steps_removed)])
    w.family("ptp_switch_frequency_adjustment_ppb", "gauge", "The servo's frequency adjustment in ppb.",
             [({}, clock.frequency_adjustment_ppb)])
    w.family("ptp_switch_port_state", "gauge",
             "1 for the port's current state (IEEE 1588 portState), 0 for the others.",
             [({"port": p.name, "state": s.name}, p.port_state == s) for p in ports for s in PortState])
    w.family("ptp_switch_port_state_code", "gauge", "The port's state as its IEEE 1588 code (9 = SLAVE, 6 = MASTER, 3 = DISABLED).",
             [({"port": p.name}, int(p.port_state)) for p in ports])
    w.family("ptp_switch_port_enabled", "gauge", "1 if the port is enabled.",
             [({"port": p.name}, p.settings.port_enable) for p in ports])
    w.family("ptp_switch_port_delay_mechanism_info", "gauge", "Constant 1; the port's delay mechanism.",
             [({"port": p.name, "delay_mechanism": p.settings.delay_mechanism.value}, 1) for p in ports])
    w.family("ptp_switch_port_peer_mean_path_delay_ns", "gauge", "portDS.peerMeanPathDelay (P2P) in nanoseconds.",
             [({"port": p.name}, p.peer_mean_path_delay_ns) for p in ports])
    w.family("ptp_switch_port_mean_path_delay_ns", "gauge", "The port's E2E mean path delay in nanoseconds.",
             [({"port": p.name}, p.mean_path_delay_ns) for p in ports])
    w.family("ptp_switch_dataplane_total", "counter",
             "The eBPF dataplane's per-port counters (labels message_type, counter; only message types seen).",
             [({"port": p.name, **_counter_labels(k)}, int(v)) for p in ports for k, v in sorted(p.dataplane_counters.items())])
    counts: dict[tuple[str, str, str], int] = {}
    for g in grants:
        key = (g.port, g.role, _MTYPE.get(g.message_type, str(g.message_type)))
        counts[key] = counts.get(key, 0) + 1
    w.family("ptp_switch_unicast_grants", "gauge", "Active unicast grants by port, role and message type.",
             [({"port": k[0], "role": k[1], "message_type": k[2]}, n) for k, n in sorted(counts.items())])
    w.family("ptp_switch_events_total", "counter", "Events published to gRPC watchers.",
             [({}, api.events.published)])
    w.family("ptp_switch_event_watchers", "gauge", "Connected WatchEvents streams.", [({}, api.events.subscriber_count)])
    return w.text()


def parse_address(text: str | None, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` / ``PORT`` (on 127.0.0.1); loopback only unless ``allow_remote``."""
    text = (text or DEFAULT_ADDRESS).strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, _, port_text = text[1:].partition("]:")
    else:
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise MetricsAddressError(f"{text!r} is not HOST:PORT")
    if host in ("", "*"):
        raise MetricsAddressError(f"{text!r}: give an address (the metrics endpoint never listens on all addresses by default)")
    if not allow_remote:
        loop_ok = host == "localhost"
        try:
            loop_ok = loop_ok or ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        if not loop_ok:
            raise MetricsAddressError(f"{host} is not a loopback address; pass --metrics-allow-remote to expose metrics")
    return host, int(port_text)


@dataclass
class MetricsHandle:
    server: asyncio.base_events.Server
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start(api: ControlApi, address: str | None = None, *, allow_remote: bool = False) -> MetricsHandle:
    """Serve ``GET /metrics`` on the running loop. Raises MetricsAddressError / OSError (bind)."""
    host, port = parse_address(address, allow_remote=allow_remote)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"only GET\n", "text/plain"
            elif parts[1].split(b"?")[0] not in (b"/metrics", b"/"):
                status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
            else:
                try:
                    status, body, ctype = "200 OK", render(api).encode(), CONTENT_TYPE
                except Exception as exc:  # a snapshot failed: say so, keep serving
                    log.exception("metrics: render failed")
                    status, body, ctype = "500 Internal Server Error", f"render failed: {exc}\n".encode(), "text/plain"
            if parts and parts[0] == b"HEAD":
                body_out = b""
            else:
                body_out = body
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body_out)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsHandle(server, host, bound)
