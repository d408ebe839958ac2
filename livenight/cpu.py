"""The CPU fast path: which precision this CPU runs fast, a model prepared for it, and one thread budget.

Why it is like this:

* **bf16.** oneDNN (under torch's CPU convolutions) runs bf16 convolutions on AMX tiles (Intel Sapphire Rapids and
  later) or with AVX512-BF16 dot products (Cooper Lake, AMD Zen 4/5). Measured on NER-Net with 40 recurrent windows
  of a real DAVIS346 recording (``livenight bench cpu``), the fastest path that stays within the 2-grey-level
  budget is: **convolution weights cast to bf16 once, autocast around the forward, channels_last activations, and
  the recurrent state left to autocast** (it keeps the LSTM cell state ``c``, which only meets elementwise ops, in
  float32; ``h`` and ``m`` only feed convolutions, which round them to bf16 anyway). Forcing the whole state to bf16
  drifts (the cell state accumulates rounding every window); plain autocast re-casts every fp32 weight on every
  step (19 M parameters for NER-Net); bf16 LayerNorm / PReLU parameters cost accuracy for no speed, so only
  convolution modules are cast. Without channels_last oneDNN reorders every activation twice per convolution and
  keeps only about half of the gain. fp32 stays the exact path (``--exact``).
* **Threads.** Capture, reconstruction (LETC scatter + network) and display share the machine with whatever else
  runs on it. OpenMP workers that spin at barriers, and a pool as wide as the machine, collapse when another job
  wants the same cores: every small convolution then waits for a descheduled worker. So the budget is decided
  once, for every pool together: ``cores − 1`` compute threads (at least 1), the same number for the numba LETC
  scatter (it runs between network steps on the same thread), one inter-op thread, ONNX Runtime's intra-op pool the
  same size with spinning off, and idle OpenMP workers that sleep (``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0``:
  read by the OpenMP runtime when torch loads it, so :func:`configure_threads` must run before ``import torch``
  for those two to apply; it says so in its description otherwise).

``import livenight.cpu`` stays cheap: torch and numba are imported only by the functions that need them.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers for bf16 (from ``/proc/cpuinfo`` flags, else torch's own probes)."""

    amx_bf16: bool
    avx512_bf16: bool
    source: str  # "/proc/cpuinfo", "torch", or "none"

    @property
    def bf16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    @property
    def bf16_unit(self) -> str:
        """``"AMX"``, ``"AVX512-BF16"`` or ``""``."""
        return "AMX" if self.amx_bf16 else "AVX512-BF16" if self.avx512_bf16 else ""


def parse_cpu_flags(cpuinfo_text: str) -> set[str]:
    """The flag set of the first ``flags`` line of a ``/proc/cpuinfo`` text (empty when there is none)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_features(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> CpuFeatures:
    """Detect AMX-BF16 / AVX512-BF16. Linux reads ``/proc/cpuinfo`` (the kernel lists ``amx_bf16`` only when it
    also enables AMX for processes); elsewhere torch's CPU probes answer when torch is installed."""
    try:
        flags = parse_cpu_flags(Path(cpuinfo).read_text())
    except OSError:
        flags = set()
    if flags:
        return CpuFeatures("amx_bf16" in flags, "avx512_bf16" in flags, "/proc/cpuinfo")
    try:
        import torch
    except ImportError:
        return CpuFeatures(False, False, "none")
    probe = torch.cpu
    amx = bool(getattr(probe, "_is_amx_tile_supported", lambda: False)())
    avx = bool(getattr(probe, "_is_avx512_bf16_supported", lambda: False)())
    return CpuFeatures(amx, avx, "torch")


def fast_cpu_dtype(features: CpuFeatures | None = None) -> str:
    """``"bfloat16"`` when the CPU has AMX-BF16 or AVX512-BF16, else ``"float32"``.

    Example:
        >>> fast_cpu_dtype(CpuFeatures(amx_bf16=True, avx512_bf16=True, source="test"))
        'bfloat16'
    """
    features = cpu_features() if features is None else features
    return "bfloat16" if features.bf16 else "float32"


def describe_cpu_path(dtype: str, features: CpuFeatures | None = None) -> str:
    """One line for ``doctor`` and the status line: ``"bf16 on AMX"``, ``"bf16 on AVX512-BF16"``, ``"fp32"``."""
    if dtype != "bfloat16":
        return "fp32"
    features = cpu_features() if features is None else features
    return f"bf16 on {features.bf16_unit}" if features.bf16 else "bf16 (emulated: this CPU has no bf16 unit)"


# ------------------------------------------------------------------------------------------- the model


def _conv_types(torch):
    nn = torch.nn
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def prepare_cpu_model(model, dtype: str = "bfloat16"):
    """A model ready for the CPU path ``dtype``; ``model`` itself is never modified.

    ``"float32"``: ``model`` unchanged (the exact path; channels_last does not help fp32 here and slowed the small
    model down). ``"bfloat16"``: a wrapper module around a copy of ``model`` whose convolution weights are
    bf16 and whose forward runs under bf16 autocast with channels_last activations.

    The result keeps NER-Net's interface: ``forward(grid, state) -> (image, state)`` with a float32 image, and
    ``initial_state()``. Build LETC tables from the *original* model (its float32 MLP), not from the result.

    Example:
        >>> net = prepare_cpu_model(model, fast_cpu_dtype())          # doctest: +SKIP
        >>> state = net.initial_state()                              # doctest: +SKIP
        >>> image, state = net(grid, state)                          # doctest: +SKIP
    """
    if dtype == "float32":
        return model
    if dtype != "bfloat16":
        raise ValueError(f"CPU dtype must be 'float32' or 'bfloat16' (got {dtype!r}); float16 needs a CUDA device")
    return _bf16_class()(model)


def _make_bf16_class():
    import torch

    class _CpuBf16Model(torch.nn.Module):
        """bf16 convolutions, channels_last, autocast; everything else (and the LSTM cell state) float32.

        Networks that declare ``bf16_state = True`` (a GRU state: a convex mix of its last value and a tanh,
        bounded, so rounding does not accumulate) run wholly in bf16 instead, state included: no autocast casts
        and no mixed-precision elementwise ops, 1.2x faster for the 16-channel FireNet.
        """

        def __init__(self, model) -> None:
            super().__init__()
            net = copy.deepcopy(model).eval().float()
            self.pure = bool(getattr(model, "bf16_state", False))
            if self.pure:
                net.to(torch.bfloat16)
            for mod in net.modules():
                if isinstance(mod, _conv_types(torch)):
                    mod.to(torch.bfloat16)
            self.model = net.to(memory_format=torch.channels_last)
            self.cfg = getattr(model, "cfg", None)

        @property
        def state_names(self) -> list[str]:
            return self.model.state_names

        def initial_state(self, batch: int = 1, device=None, dtype=None) -> tuple:
            """Zeros in channels_last, float32 (bf16 for a ``bf16_state`` network); ``dtype`` is accepted for
            interface compatibility and ignored."""
            zeros = self.model.initial_state(batch, device=device,
                                             dtype=torch.bfloat16 if self.pure else torch.float32)
            return tuple(z.contiguous(memory_format=torch.channels_last) if z.dim() == 4 else z for z in zeros)

        def forward(self, grid, state):
            if self.pure:
                image, state = self.model(grid.to(torch.bfloat16).contiguous(memory_format=torch.channels_last),
                                          state)
                return image.float(), tuple(state)
            grid = grid.float().contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                image, state = self.model(grid, state)
            return image.float(), tuple(state)

    return _CpuBf16Model


_BF16_CLASS = None


def _bf16_class():
    global _BF16_CLASS
    if _BF16_CLASS is None:
        _BF16_CLASS = _make_bf16_class()
    return _BF16_CLASS


# ------------------------------------------------------------------------------------------- threads


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadBudget:
    """One decision for every thread pool of a run (see the module docstring for why)."""

    cores: int  # CPUs available to this process
    compute: int  # torch intra-op threads = ONNX Runtime intra-op threads
    numba: int  # LETC scatter threads
    interop: int  # torch inter-op threads
    passive: bool  # idle OpenMP workers sleep (the wait policy was in place before torch loaded OpenMP)

    def describe(self) -> str:
        """e.g. ``"1 compute thread of 2 cores, workers sleep"``."""
        s = "" if self.compute == 1 else "s"
        waits = "workers sleep" if self.passive else "workers may spin (torch was imported before the budget)"
        return f"{self.compute} compute thread{s} of {self.cores} cores, {waits}"

    def ort_options(self, options) -> None:
        """Apply the budget to an ``onnxruntime.SessionOptions`` (intra/inter-op sizes, no spinning)."""
        options.intra_op_num_threads = self.compute
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")


def plan_threads(cores: int | None = None, compute: int | None = None) -> ThreadBudget:
    """The budget without applying it: ``compute`` (default ``cores − 1``, at least 1) capped at ``cores``."""
    cores = available_cores() if cores is None else int(cores)
    if cores < 1:
        raise ValueError(f"cores must be >= 1 (got {cores})")
    if compute is None:
        compute = max(1, cores - 1)
    compute = int(compute)
    if compute < 1:
        raise ValueError(f"compute threads must be >= 1 (got {compute})")
    compute = min(compute, cores)
    return ThreadBudget(cores=cores, compute=compute, numba=compute, interop=1, passive=True)


_APPLIED: ThreadBudget | None = None


def configure_threads(compute: int | None = None, environ=None) -> ThreadBudget:
    """Decide and apply the thread budget for this process; call it once, early, before torch and numba load.

    The compute thread count is ``compute`` (``--threads``), else ``$LIVENIGHT_THREADS``, else the user's
    ``$OMP_NUM_THREADS``, else ``cores − 1`` (at least 1). Writes ``OMP_NUM_THREADS`` and ``NUMBA_NUM_THREADS``
    (read by torch and numba when they load: numba's count is process-wide only that way, its
    ``set_num_threads`` is per calling thread), and ``OMP_WAIT_POLICY=PASSIVE`` / ``KMP_BLOCKTIME=0`` unless the
    user set them. When torch is already loaded, ``torch.set_num_threads`` still resizes its pool (the wait policy
    no longer applies: the description says so) and ``torch.set_num_interop_threads(1)`` is tried. ONNX Runtime
    sessions take the budget through :meth:`ThreadBudget.ort_options` (or ``OnnxRuntimeEngine(threads=...)``).

    Args:
        compute: compute threads; see above for the default.
        environ: the environment to write (``os.environ`` by default, which also applies the budget to an
            already-loaded torch; tests pass a dict and nothing else is touched).
    """
    global _APPLIED
    env = os.environ if environ is None else environ
    if compute is None:
        for var in ("LIVENIGHT_THREADS", "OMP_NUM_THREADS"):
            if env.get(var, "").strip().isdigit() and int(env[var]) > 0:
                compute = int(env[var])
                break
    budget = plan_threads(compute=compute)
    torch_loaded = "torch" in sys.modules
    policy_before = env.get("OMP_WAIT_POLICY", "")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("KMP_BLOCKTIME", "0")
    env["OMP_NUM_THREADS"] = str(budget.compute)
    numba = sys.modules.get("numba") if environ is None else None
    if numba is None:
        env["NUMBA_NUM_THREADS"] = str(budget.numba)
    else:  # numba read it when it loaded; changing it now makes its next compilation fail once threads run
        budget = ThreadBudget(budget.cores, budget.compute, int(numba.config.NUMBA_NUM_THREADS), budget.interop,
                              budget.passive)
    # OpenMP reads the wait policy when torch loads it: it applies if torch came later, or the user had set it
    passive = env["OMP_WAIT_POLICY"].upper() == "PASSIVE" and (not torch_loaded or policy_before.upper() == "PASSIVE")
    budget = ThreadBudget(budget.cores, budget.compute, budget.numba, budget.interop, passive)
    if environ is None and torch_loaded:
        import torch

        torch.set_num_threads(budget.compute)
        try:
            torch.set_num_interop_threads(budget.interop)
        except RuntimeError:  # already set, or inter-op work already ran: that pool stays as it is
            pass
    _APPLIED = budget
    return budget


def current_budget() -> ThreadBudget | None:
    """The budget :func:`configure_threads` applied in this process (None before)."""
    return _APPLIED
