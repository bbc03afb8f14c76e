#!/usr/bin/env python3
"""seccomp_exec.py PROGRAM [ARGS...]: installs a seccomp filter that allows
every syscall (one BPF instruction), then execs PROGRAM: a task that runs
under seccomp mode 2 and otherwise behaves normally."""
import ctypes
import os
import struct
import sys

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000

libc = ctypes.CDLL(None, use_errno=True)
insn = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
prog = ctypes.create_string_buffer(struct.pack("=H6xQ", 1, ctypes.addressof(insn)))
arg = ctypes.c_ulong
if libc.prctl(arg(PR_SET_SECCOMP), arg(SECCOMP_MODE_FILTER), arg(ctypes.addressof(prog)), arg(0), arg(0)) != 0:
    sys.exit("seccomp_exec: prctl: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
