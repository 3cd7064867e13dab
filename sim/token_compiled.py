"""The token core in Verilator: ``harness/token_harness.cpp`` holds the memory and the bus
models, Python loads the image and the program over the registers and runs tokens.
Same core, same memory image and program as ``ptqtp.sim.token_pysim``; about a thousand
times faster."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from ptqtp.hdl.token_core import TokenCore, TokenParams
from ptqtp.hdl.token_isa import ERR, TokenReg
from ptqtp.hdl.token_program import TokenImage

from .compiled import BuildOptions, build_library
from .token_pysim import OP_CYCLE_REGS, TokenResult

__all__ = ["TOKEN_TOP", "CompiledTokenCore", "token_verilog"]

TOKEN_TOP = "token_top"
SOURCE = Path(__file__).with_name("harness") / "token_harness.cpp"
ACCESS_LIMIT = 100_000
#: Verilator on Amaranth's Verilog as generated: for the SmolLM2 core the Yosys flattening
#: the engine's harness uses took 220 s and simulated slower (23 s a token against 19 s);
#: its memories (program, scratch, softmax buffer) dominate, not fine-grained logic.
TOKEN_BUILD = BuildOptions(netlist_opt=False)

_u64, _u32, _u8, _f64 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint8, ctypes.c_double
_P = ctypes.POINTER
_SIGNATURES = {
    "tk_new": (ctypes.c_void_p, [_u64]),
    "tk_free": (None, [ctypes.c_void_p]),
    "tk_stall": (None, [ctypes.c_void_p, _f64, _u64]),
    "tk_memory": (ctypes.c_int, [ctypes.c_void_p, _P(_u8), _u64, _u64, ctypes.c_int]),
    "tk_cycle": (_u64, [ctypes.c_void_p]),
    "tk_error": (ctypes.c_int, [ctypes.c_void_p]),
    "tk_write": (ctypes.c_int, [ctypes.c_void_p, _u32, _u32, _u64]),
    "tk_read": (ctypes.c_int, [ctypes.c_void_p, _u32, _P(_u32), _u64]),
    "tk_wait": (_u64, [ctypes.c_void_p, _u64, _u64]),
}


def token_verilog(params: TokenParams) -> str:
    core = TokenCore(params)
    return verilog.convert(core, name=TOKEN_TOP, emit_src=False)


class CompiledTokenCore:
    """One simulation of the core with ``image`` in its memory and its program loaded.
    ``stall``: the share of cycles each memory model holds its handshakes low (seeded)."""

    def __init__(
        self,
        params: TokenParams,
        image: TokenImage,
        stall: float = 0.0,
        seed: int = 1,
        options: BuildOptions = TOKEN_BUILD,
    ):
        if params.engine.data_width < 128:
            raise ValueError("the compiled token harness needs an engine data width of at least 128 bits")
        self.params, self.image, self.h = params, image, None
        header = (
            f'#include "V{TOKEN_TOP}.h"\n#define TOKEN_TOP_CLASS V{TOKEN_TOP}\n'
            f"#define ENGINE_WORD_BYTES {params.engine.data_width // 8}\n"
        )
        lib = build_library(token_verilog(params), TOKEN_TOP, SOURCE, "token_ports.h", header, options)
        self.dll = dll = ctypes.CDLL(str(lib))
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(dll, name)
            fn.restype, fn.argtypes = res, args
        self.h = dll.tk_new(len(image.memory) + 4096)
        dll.tk_stall(self.h, stall, seed)
        data = np.frombuffer(bytes(image.memory), np.uint8)
        dll.tk_memory(self.h, data.ctypes.data_as(_P(_u8)), 0, len(data), 1)
        if self.read(TokenReg.VOCAB) != params.arch.vocab:
            raise RuntimeError("the core does not answer its registers")
        self.write(TokenReg.PROG_ADDR, 0)
        for w in image.program_words():
            self.write(TokenReg.PROG_DATA, w)

    def close(self) -> None:
        if self.h:
            self.dll.tk_free(self.h)
            self.h = None

    def __del__(self):
        self.close()

    def write(self, reg: TokenReg, value: int) -> None:
        if self.dll.tk_write(self.h, int(reg), value & 0xFFFFFFFF, ACCESS_LIMIT):
            raise RuntimeError(f"the token core did not take a write of {reg.name}")

    def read(self, reg: TokenReg) -> int:
        v = _u32()
        if self.dll.tk_read(self.h, int(reg), ctypes.byref(v), ACCESS_LIMIT):
            raise RuntimeError(f"the token core did not answer a read of {reg.name}")
        return v.value

    def memory(self, offset: int, length: int) -> bytes:
        buf = np.zeros(length, np.uint8)
        if self.dll.tk_memory(self.h, buf.ctypes.data_as(_P(_u8)), offset, length, 0):
            raise ValueError(f"memory range {offset}+{length} is outside the simulated memory")
        return buf.tobytes()

    def write_memory(self, offset: int, data: bytes) -> None:
        buf = np.frombuffer(bytes(data), np.uint8)
        if self.dll.tk_memory(self.h, buf.ctypes.data_as(_P(_u8)), offset, len(buf), 1):
            raise ValueError(f"memory range {offset}+{len(buf)} is outside the simulated memory")

    def continue_from(self, cache, length: int) -> None:
        """Continue a context the golden decoder began: its KV cache's first ``length``
        positions into memory, POS = ``length``."""
        for at, data in self.image.kv_writes(cache, length):
            self.write_memory(at, data)
        self.write(TokenReg.POS, length)

    @property
    def cycle(self) -> int:
        return self.dll.tk_cycle(self.h)

    def reset_context(self) -> None:
        self.write(TokenReg.CTRL, 2)
        self.write(TokenReg.POS, 0)

    def step(self, token: int, limit: int = 2_000_000_000) -> TokenResult:
        """Run one token at the current position; ``RuntimeError`` names the core's error."""
        self.write(TokenReg.TOKEN, token)
        self.write(TokenReg.CTRL, 1)
        if self.dll.tk_wait(self.h, 256, limit) == 2**64 - 1:
            raise RuntimeError(f"the token core did not finish token {token} within {limit} cycles")
        status = self.read(TokenReg.STATUS)
        if status & 4:
            code = ERR((status >> 8) & 0xFF)
            self.write(TokenReg.CTRL, 2)
            raise RuntimeError(f"the token core stopped with {code.name} (token {token})")
        if self.dll.tk_error(self.h):
            raise RuntimeError("the token core addressed memory outside the image")
        logit = self.read(TokenReg.LOGIT_LO) | self.read(TokenReg.LOGIT_HI) << 32
        logit -= (logit >> 63) << 64
        return TokenResult(
            self.read(TokenReg.RESULT),
            logit,
            self.read(TokenReg.CYCLES),
            {k: self.read(r) for k, r in OP_CYCLE_REGS.items()},
            status,
        )
