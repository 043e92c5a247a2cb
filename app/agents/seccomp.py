"""The seccomp filter of sandboxed commands: system calls a shell command has no use for and an
escape would need, refused with EPERM.

Refused: tracing or writing other processes (``ptrace``, ``process_vm_*``, ``kcmp``,
``pidfd_getfd``), new namespaces and mounts, kernel keyrings, BPF, perf events,
``userfaultfd``, ``io_uring`` (whose operations bypass this filter), and loading kernels or
modules. ``clone3`` answers ENOSYS, so the C library falls back to ``clone``. The program is
classic BPF as ``bwrap --seccomp`` reads it; on a machine of another architecture (or the
32-bit ABIs of this one) every system call is refused.
"""

from __future__ import annotations

import errno
import platform
import struct

# Linux system call numbers (asm/unistd_64.h; asm-generic/unistd.h for aarch64).
_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_getfd": 438, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
    "pivot_root": 155, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "keyctl": 250, "add_key": 248,
    "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "name_to_handle_at": 303, "open_by_handle_at": 304,
}  # fmt: skip
_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
    "pidfd_getfd": 438, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
    "pivot_root": 41, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "keyctl": 219, "add_key": 217,
    "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104,
    "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
    "name_to_handle_at": 264, "open_by_handle_at": 265,
}  # fmt: skip
_CLONE3 = 435  # the same on both

# (AUDIT_ARCH_*, table, first number of an ABI that must not be used: x32 on x86_64)
_ARCHITECTURES = {
    "x86_64": (0xC000003E, _X86_64, 0x40000000),
    "aarch64": (0xC00000B7, _AARCH64, None),
}

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_NR_OFFSET = 0  # struct seccomp_data: int nr; __u32 arch; ...
_ARCH_OFFSET = 4


def is_supported(machine: str | None = None) -> bool:
    return (machine or platform.machine()) in _ARCHITECTURES


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_filter(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (default: this one), as bytes for ``bwrap --seccomp``."""
    arch, numbers, first_foreign = _ARCHITECTURES.get(machine or platform.machine(), (0, {}, None))
    denied = sorted(set(numbers.values()))
    # Layout: check arch; load nr; [foreign ABI]; clone3; one test per denied call; allow;
    # EPERM; ENOSYS. Jump offsets count instructions after the jump.
    tests = len(denied) + 1 + (1 if first_foreign is not None else 0)
    to_deny = tests  # from the first test: over every test and the allow, to the EPERM
    program = [_instruction(_LD_W_ABS, _ARCH_OFFSET)]
    # Another architecture (a 32-bit ABI, or an unknown machine): refuse everything.
    program.append(_instruction(_JEQ_K, arch, jt=1, jf=0))
    program.append(_instruction(_RET_K, _ERRNO | errno.EPERM))
    program.append(_instruction(_LD_W_ABS, _NR_OFFSET))
    position = 0
    if first_foreign is not None:
        program.append(_instruction(_JGE_K, first_foreign, jt=to_deny - position, jf=0))
        position += 1
    program.append(_instruction(_JEQ_K, _CLONE3, jt=to_deny - position + 1, jf=0))
    position += 1
    for number in denied:
        program.append(_instruction(_JEQ_K, number, jt=to_deny - position, jf=0))
        position += 1
    program.append(_instruction(_RET_K, _ALLOW))
    program.append(_instruction(_RET_K, _ERRNO | errno.EPERM))
    program.append(_instruction(_RET_K, _ERRNO | errno.ENOSYS))
    return b"".join(program)
