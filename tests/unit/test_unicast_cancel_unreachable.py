"""UnicastService.cancel_unreachable: the runtime reports a grantee it cannot reach (every send held
for seconds by the UDP transport's neighbour gate); the service cancels that grantee's grants."""

from __future__ import annotations

from controlplane.codec.header import Header
from controlplane.codec.messages import Signaling
from controlplane.codec.tlv import CancelUnicastTransmissionTlv, RequestUnicastTransmissionTlv
from controlplane.codec.types import PortIdentity
from controlplane.core.actions import SendMessage

from tests.unit.test_unicast_grants_api import serving_clock  # the same serving clock

S = 1_000_000_000


def request(svc, t, address, ident):
    req = Signaling(Header(message_type=0xC, source_port_identity=PortIdentity(ident, 1), unicast=True,
                           log_message_interval=0x7F), PortIdentity(b"\xff" * 8, 0xFFFF),
                    (RequestUnicastTransmissionTlv(0x0, 0, 60), RequestUnicastTransmissionTlv(0xB, 0, 60),
                     RequestUnicastTransmissionTlv(0x9, 0, 60)))
    return svc.handle_message(1, req, None, t, (address, 320))


def grants(svc, t):
    return sorted((r.address, r.message_type) for r in svc.servers[1].grant_table(t))


def test_the_unreachable_grantee_loses_its_grants_and_is_told_the_others_keep_theirs():
    _clock, svc, t = serving_clock()
    request(svc, t, "10.251.1.77", bytes.fromhex("0a0000fffe000077"))
    request(svc, t, "10.251.1.2", bytes.fromhex("0a0000fffe000002"))
    assert len(grants(svc, t)) == 6
    out = svc.cancel_unreachable(1, "10.251.1.77", t + 5 * S)
    assert grants(svc, t + 5 * S) == [("10.251.1.2", 0x0), ("10.251.1.2", 0x9), ("10.251.1.2", 0xB)]
    assert svc.counters["canceled_unreachable"] == 3
    cancels = [a for a in out if isinstance(a, SendMessage)]
    assert cancels and all(a.dest == "10.251.1.77" for a in cancels)
    sent = sorted(tlv.message_type for a in cancels for tlv in a.message.tlvs if isinstance(tlv, CancelUnicastTransmissionTlv))
    assert sent == [0x0, 0x9, 0xB]
    # streams to it stop: no Sync/Announce/Delay_Resp to the cancelled address from now on
    t2 = t + 5 * S
    to_legit = 0
    while t2 < t + 10 * S:
        t2 = max(t2 + 1, svc.next_deadline_ns() or t2 + S)
        for a in svc.handle_timer(t2):
            if isinstance(a, SendMessage) and a.dest == "10.251.1.77":  # only CANCEL re-sends (until acknowledged)
                assert isinstance(a.message, Signaling), a
                assert all(isinstance(x, CancelUnicastTransmissionTlv) for x in a.message.tlvs), a
            elif isinstance(a, SendMessage) and a.dest == "10.251.1.2":
                to_legit += 1
    assert to_legit >= 8, to_legit  # 5 s of 1/s Sync and Announce streams to the reachable client


def test_nothing_to_cancel_is_a_no_op():
    _clock, svc, t = serving_clock()
    assert svc.cancel_unreachable(1, "10.251.1.9", t) == []
    assert svc.cancel_unreachable(2, "10.251.1.9", t) == []  # no server on that port
    assert svc.cancel_unreachable(1, "not an address", t) == []
    assert svc.counters["canceled_unreachable"] == 0


def test_a_client_that_comes_back_is_granted_again():
    _clock, svc, t = serving_clock()
    ident = bytes.fromhex("0a0000fffe000077")
    request(svc, t, "10.251.1.77", ident)
    svc.cancel_unreachable(1, "10.251.1.77", t + S)
    request(svc, t + 2 * S, "10.251.1.77", ident)
    assert len(grants(svc, t + 2 * S)) == 3
