"""Arithmetic that rounds alike on x86-64 CPUs with AVX2: what the benchmark datasets are collected with.

Torch picks its element-wise kernels (ATen's AVX2, AVX-512 or generic builds) and MKL its matrix
products by the CPU a process runs on, so an agent's actions round differently from one machine to
another and an argmax over item scores now and then picks another item: the rebuilt dataset is
then not the recorded one (measured: DiffuseTopDown's expert, 26 clicks in 1,000,000 turns apart
between a Zen 1 EPYC and the VM that recorded it). ATen's generic kernels and MKL's AVX2 code path
on one thread run the same instructions on every such CPU: with them the Zen 1 machine rebuilds the
recorded datasets bit for bit (BENCHMARKS.md). Both are chosen from the environment when a process
starts, so a command that needs them runs itself again in a child process with this environment.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
import threading
from typing import IO, Any, BinaryIO, Optional, Sequence

#: the environment of a portable process: ATen's generic kernels, MKL's conditional numerical
#: reproducibility on its AVX2 path (oneDNN capped likewise), one thread
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SLATEREC_THREADS": "1"}


def is_portable() -> bool:
    """Whether this process was started with :data:`PORTABLE_ENV`."""
    return all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())


def cpu_vendor() -> Optional[str]:
    """The CPU's vendor as the processor names itself (``GenuineIntel``, ``AuthenticAMD``; None where
    /proc/cpuinfo does not say). MKL's reproducible branches (``MKL_CBWR``) hold on Intel CPUs only;
    elsewhere MKL takes its automatic branch, so matrix products round alike only within a vendor."""
    from ..provenance import machine_record

    return machine_record().get("vendor")


def arithmetic_record() -> dict[str, Any]:
    """How this process rounds, for a dataset's provenance: portable or not, torch's kernel build
    and MKL's reproducibility setting as they are in effect, the thread count and the CPU's vendor."""
    import torch

    return {"portable": is_portable(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR"), "threads": torch.get_num_threads(), "cpu_vendor": cpu_vendor()}


def _pass_through(stream: BinaryIO, out: IO[str]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := stream.read1(65536):
        out.write(decoder.decode(chunk))
        out.flush()
    out.write(decoder.decode(b"", final=True))
    out.flush()


def run_portably(argv: Sequence[str]) -> int:
    """Run ``slaterec ARGV`` in a child process started with :data:`PORTABLE_ENV`, its output passed
    through this process's ``sys.stdout`` and ``sys.stderr`` as it comes; returns its exit status.
    A Ctrl-C (or SIGTERM) here stops the child the way a sweep stops its trials, then propagates."""
    from ..cli.children import CHILD_CLI, child_env, stop_child

    env = {**child_env(1), **PORTABLE_ENV}
    proc = subprocess.Popen([sys.executable, "-c", CHILD_CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)  # a Ctrl-C reaches this process, which passes it on once
    copies = [threading.Thread(target=_pass_through, args=(proc.stdout, sys.stdout), daemon=True),
              threading.Thread(target=_pass_through, args=(proc.stderr, sys.stderr), daemon=True)]
    for t in copies:
        t.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        stop_child(proc)
        raise
    finally:
        for t in copies:
            t.join()
    return code
