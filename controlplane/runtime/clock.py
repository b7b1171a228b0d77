"""Local clocks the daemon steers: a virtual clock over CLOCK_REALTIME (default) and a PHC.

``VirtualClock`` never touches the system clock: PTP time = CLOCK_REALTIME read + offset +
frequency ratio (the pure maths is the core's ``VirtualClockMath``, shared with the simulator).
Kernel software timestamps are CLOCK_REALTIME, so ``from_system_ns`` converts them into this
clock's PTP time. ``PhcClock`` steers /dev/ptpN with clock_adjtime on the PHC's dynamic clock id,
and only when configured explicitly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

from controlplane.core.clocks import VirtualClockMath


class ClockError(OSError):
    """A clock that cannot be opened or adjusted."""


class VirtualClock:
    """PTP time as offset + frequency over CLOCK_REALTIME; adjusting it adjusts only itself.

    ``freq_ppb`` is the initial frequency *setting* (what ``adjust_frequency`` later replaces);
    ``oscillator_error_ppb`` is a lab-made error of the "oscillator" itself: it stays under every
    adjustment, as a real oscillator's error does, so a servo has to find and cancel it.
    """

    def __init__(self, offset_ns: int = 0, freq_ppb: float = 0.0, max_frequency_ppb: float = 900_000_000,
                 oscillator_error_ppb: float = 0.0) -> None:
        self._oscillator_error_ppb = float(oscillator_error_ppb)
        self._setting_ppb = float(freq_ppb)
        self._math = VirtualClockMath(time.clock_gettime_ns(time.CLOCK_REALTIME), offset_ns,
                                      freq_ppb + oscillator_error_ppb, max_frequency_ppb + abs(oscillator_error_ppb))
        self._max_ppb = float(max_frequency_ppb)

    @staticmethod
    def system_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_REALTIME)

    def read_ns(self) -> int:
        return self._math.time(self.system_ns())

    def from_system_ns(self, system_ns: int) -> int:
        """PTP time of this clock at a CLOCK_REALTIME instant (e.g. a kernel software stamp)."""
        return self._math.time(system_ns)

    def to_system_ns(self, ptp_ns: int) -> int:
        return self._math.to_base(ptp_ns)

    def error_ns(self) -> int:
        """This clock minus CLOCK_REALTIME now: in a lab where the GM runs on the same kernel clock,
        this is the true time error."""
        now = self.system_ns()
        return self._math.time(now) - now

    @property
    def frequency_ppb(self) -> float:
        """The frequency setting (the servo's last adjustment), without the oscillator's error."""
        return self._setting_ppb

    def adjust_frequency(self, freq_ppb: float) -> None:
        self._setting_ppb = max(-self._max_ppb, min(self._max_ppb, float(freq_ppb)))
        self._math.adjust_frequency(self._setting_ppb + self._oscillator_error_ppb, self.system_ns())

    def step(self, delta_ns: int) -> None:
        self._math.step(delta_ns)

    @property
    def name(self) -> str:
        return "virtual(CLOCK_REALTIME)"


# --- PHC: clock_adjtime on the dynamic posix clock of /dev/ptpN ---------------------------------

ADJ_OFFSET = 0x0001
ADJ_FREQUENCY = 0x0002
ADJ_SETOFFSET = 0x0100
ADJ_NANO = 0x2000
CLOCKFD = 3


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _fd_to_clockid(fd: int) -> int:
    return ((~fd) << 3) | CLOCKFD


class PhcClock:
    """A PTP hardware clock (/dev/ptpN). Only built when the configuration names one that exists."""

    def __init__(self, device: str) -> None:
        if not os.path.exists(device):
            raise ClockError(f"PHC {device} does not exist")
        try:
            self._fd = os.open(device, os.O_RDWR)
        except OSError as exc:
            raise ClockError(f"cannot open PHC {device}: {exc}") from exc
        self.device = device
        self._clockid = _fd_to_clockid(self._fd)
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._freq_ppb = 0.0

    def close(self) -> None:
        os.close(self._fd)

    @property
    def name(self) -> str:
        return self.device

    def read_ns(self) -> int:
        ts = _Timespec()
        if self._libc.clock_gettime(ctypes.c_int(self._clockid), ctypes.byref(ts)) != 0:
            raise ClockError(ctypes.get_errno(), f"clock_gettime {self.device}")
        return ts.tv_sec * 1_000_000_000 + ts.tv_nsec

    def from_system_ns(self, stamp_ns: int) -> int:
        return stamp_ns  # hardware stamps are already in the PHC's time

    def _adjtime(self, tx: _Timex) -> None:
        if self._libc.clock_adjtime(ctypes.c_int(self._clockid), ctypes.byref(tx)) < 0:
            raise ClockError(ctypes.get_errno(), f"clock_adjtime {self.device}")

    @property
    def frequency_ppb(self) -> float:
        return self._freq_ppb

    def adjust_frequency(self, freq_ppb: float) -> None:
        tx = _Timex()
        tx.modes = ADJ_FREQUENCY
        tx.freq = int(round(freq_ppb * 65.536))  # scaled ppm: ppb * 2^16 / 1000
        self._adjtime(tx)
        self._freq_ppb = freq_ppb

    def step(self, delta_ns: int) -> None:
        tx = _Timex()
        tx.modes = ADJ_SETOFFSET | ADJ_NANO
        sec, nsec = divmod(int(delta_ns), 1_000_000_000)
        tx.time.tv_sec = sec
        tx.time.tv_usec = nsec  # with ADJ_NANO the field holds nanoseconds
        self._adjtime(tx)
