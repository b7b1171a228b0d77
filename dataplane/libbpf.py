"""Thin ctypes binding to the few libbpf (libbpf.so.1) calls the dataplane needs.

Map access, pinning and BPF_PROG_TEST_RUN work on plain file descriptors, so the same code serves
BCC-loaded objects (their fds) and objects a later process re-opens from /sys/fs/bpf pins.
Every failure raises :class:`BpfError` with the errno and the operation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import functools
import os

LIBBPF_PATHS = ("libbpf.so.1", "/usr/lib/x86_64-linux-gnu/libbpf.so.1")

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2


class BpfError(OSError):
    """A BPF syscall failed (errno and what we were doing)."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what


class BpfTestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf 1.x, include/bpf/bpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@functools.lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    last: OSError | None = None
    for name in LIBBPF_PATHS:
        try:
            so = ctypes.CDLL(name, use_errno=True)
            break
        except OSError as exc:
            last = exc
    else:
        raise BpfError(_errno.ENOENT, f"cannot load libbpf.so.1 ({last}); install libbpf1 (make setup)")
    vp, c_int, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    so.bpf_obj_pin.argtypes = [c_int, ctypes.c_char_p]
    so.bpf_obj_get.argtypes = [ctypes.c_char_p]
    so.bpf_map_lookup_elem.argtypes = [c_int, vp, vp]
    so.bpf_map_update_elem.argtypes = [c_int, vp, vp, ctypes.c_uint64]
    so.bpf_map_delete_elem.argtypes = [c_int, vp]
    so.bpf_map_get_next_key.argtypes = [c_int, vp, vp]
    so.bpf_map_update_batch.argtypes = [c_int, vp, vp, ctypes.POINTER(u32), vp]
    so.bpf_map_lookup_batch.argtypes = [c_int, vp, vp, vp, vp, ctypes.POINTER(u32), vp]
    so.bpf_prog_test_run_opts.argtypes = [c_int, ctypes.POINTER(BpfTestRunOpts)]
    so.bpf_obj_get_info_by_fd.argtypes = [c_int, vp, ctypes.POINTER(u32)]
    so.libbpf_num_possible_cpus.argtypes = []
    return so


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno() or -ret
        raise BpfError(err, what)
    return ret


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pin fd {fd} at {path}")


def obj_get(path: str) -> int:
    return _check(lib().bpf_obj_get(path.encode()), f"open pinned {path}")


def num_possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def map_lookup(fd: int, key: ctypes.Structure | ctypes._SimpleCData, value) -> bool:  # type: ignore[name-defined]
    """Fill ``value``; False when the key is absent."""
    ret = lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    if ret < 0:
        err = ctypes.get_errno() or -ret
        if err == _errno.ENOENT:
            return False
        raise BpfError(err, f"lookup in map fd {fd}")
    return True


def map_update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    _check(lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags), f"update map fd {fd}")


def map_delete(fd: int, key) -> bool:
    ret = lib().bpf_map_delete_elem(fd, ctypes.byref(key))
    if ret < 0:
        err = ctypes.get_errno() or -ret
        if err == _errno.ENOENT:
            return False
        raise BpfError(err, f"delete from map fd {fd}")
    return True


def map_update_batch(fd: int, keys, values) -> None:
    """Write ``len(keys)`` entries in one syscall (ctypes arrays of the key and value types)."""
    count = ctypes.c_uint32(len(keys))
    _check(lib().bpf_map_update_batch(fd, ctypes.byref(keys), ctypes.byref(values), ctypes.byref(count), None),
           f"batch update of map fd {fd}")


def map_lookup_batch(fd: int, key_type: type, value_type: type, n: int) -> tuple:
    """Read up to ``n`` entries of an array-like map in one syscall: (keys, values, count)."""
    keys, values = (key_type * n)(), (value_type * n)()
    count = ctypes.c_uint32(n)
    out_batch = ctypes.c_uint32()
    ret = lib().bpf_map_lookup_batch(fd, None, ctypes.byref(out_batch), ctypes.byref(keys), ctypes.byref(values),
                                     ctypes.byref(count), None)
    if ret < 0:
        err = ctypes.get_errno() or -ret
        if err != _errno.ENOENT:       # ENOENT: the last batch (count is still valid)
            raise BpfError(err, f"batch lookup in map fd {fd}")
    return keys, values, count.value


def map_keys(fd: int, key_type: type) -> list:
    keys = []
    cur = None
    while True:
        nxt = key_type()
        ret = lib().bpf_map_get_next_key(fd, None if cur is None else ctypes.byref(cur), ctypes.byref(nxt))
        if ret < 0:
            err = ctypes.get_errno() or -ret
            if err == _errno.ENOENT:
                return keys
            raise BpfError(err, f"iterate map fd {fd}")
        keys.append(nxt)
        cur = nxt


class _ProgInfo(ctypes.Structure):
    # the head of struct bpf_prog_info: enough for type and id
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("pad", ctypes.c_uint8 * 200)]


def prog_id(fd: int) -> int:
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"info of prog fd {fd}")
    return int(info.id)


def prog_test_run(opts: BpfTestRunOpts, fd: int) -> None:
    opts.sz = ctypes.sizeof(BpfTestRunOpts)
    _check(lib().bpf_prog_test_run_opts(fd, ctypes.byref(opts)), f"BPF_PROG_TEST_RUN on prog fd {fd}")


class _ProgInfoFull(ctypes.Structure):
    """Head of struct bpf_prog_info up to name (uapi/linux/bpf.h), padded for newer kernels."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("rest", ctypes.c_uint8 * 256)]


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 256)]


def prog_fd_by_id(prog_id_: int) -> int:
    so = lib()
    so.bpf_prog_get_fd_by_id.argtypes = [ctypes.c_uint32]
    return _check(so.bpf_prog_get_fd_by_id(prog_id_), f"open prog id {prog_id_}")


def prog_map_ids(fd: int) -> list[int]:
    """The ids of the maps a loaded program uses."""
    ids = (ctypes.c_uint32 * 64)()
    info = _ProgInfoFull()
    info.nr_map_ids = 64
    info.map_ids = ctypes.addressof(ids)
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"info of prog fd {fd}")
    return [int(ids[i]) for i in range(min(info.nr_map_ids, 64))]


def map_fd_by_id(map_id: int) -> tuple[int, str]:
    """Open a map by id; returns (fd, name as the kernel keeps it, at most 15 characters)."""
    so = lib()
    so.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
    fd = _check(so.bpf_map_get_fd_by_id(map_id), f"open map id {map_id}")
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"info of map fd {fd}")
    return fd, info.name.decode(errors="replace")


# --- tcx (kernel >= 6.6): BPF programs attached at the tc hooks without a qdisc or classifier -----
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_F_REPLACE = 1 << 2


class _ProgAttachOpts(ctypes.Structure):
    """struct bpf_prog_attach_opts as libbpf 1.1 knows it (sz, flags, replace_prog_fd)."""

    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint), ("replace_prog_fd", ctypes.c_int)]


def prog_attach(prog_fd: int, ifindex: int, attach_type: int, replace_fd: int | None = None) -> None:
    """BPF_PROG_ATTACH to an interface's tcx hook (survives the process); ``replace_fd``: swap that
    attached program for this one atomically (BPF_F_REPLACE)."""
    so = lib()
    so.bpf_prog_attach_opts.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_ProgAttachOpts)]
    opts = _ProgAttachOpts(sz=ctypes.sizeof(_ProgAttachOpts))
    if replace_fd is not None:
        opts.flags, opts.replace_prog_fd = BPF_F_REPLACE, replace_fd
    _check(so.bpf_prog_attach_opts(prog_fd, ifindex, attach_type, ctypes.byref(opts)),
           f"attach prog fd {prog_fd} to ifindex {ifindex} (type {attach_type})")


def prog_detach(prog_fd: int, ifindex: int, attach_type: int) -> None:
    so = lib()
    so.bpf_prog_detach2.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    _check(so.bpf_prog_detach2(prog_fd, ifindex, attach_type), f"detach prog fd {prog_fd} from ifindex {ifindex}")


def prog_query(ifindex: int, attach_type: int) -> list[int]:
    """Ids of the programs attached to an interface's hook ([] when none or unsupported)."""
    so = lib()
    so.bpf_prog_query.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint32),
                                  ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32)]
    ids = (ctypes.c_uint32 * 64)()
    flags, cnt = ctypes.c_uint32(), ctypes.c_uint32(64)
    if so.bpf_prog_query(ifindex, attach_type, 0, ctypes.byref(flags), ids, ctypes.byref(cnt)) < 0:
        return []
    return [int(ids[i]) for i in range(min(cnt.value, 64))]


def prog_name(fd: int) -> str:
    info = _ProgInfoFull()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"info of prog fd {fd}")
    return info.name.decode(errors="replace")
