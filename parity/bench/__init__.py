"""``python -m parity.bench``: training and sampling throughput of the tutorial's code as written and of both
twins' plain and fast paths, side by side, with compile times, peak memory and the share of the machine's peak;
with ``--device cuda``, the torch twin's ways of running on a GPU.

    python -m parity.bench [--batch 16] [--train-steps 3] [--sample-steps 10] [--repeats 3] [--quiet-wait 60]
                           [--configs tutorial,ms_pynative,ms_compiled,torch_eager,torch_channels_last]
                           [--isa avx2|both] [--json PATH] [--markdown PATH] [--no-check] [--workers 1[,2]]
    python -m parity.bench --device cuda [--configs eager,graph,graph_bf16,...] [--batch 16 | --batches 16,...,2048]
                           [--torch-device cuda|cuda:N|cpu] [--budget-s S] [--profile PATH]
    python -m parity.bench.fastcheck --device cuda [--json PATH]   the GPU fast paths against eager and float64

Rules:
  * Each CPU configuration runs in its own worker process (``--worker NAME``, which imports one framework
    only), so peak RSS (``ru_maxrss``) is per configuration and no framework's threads meet another's. The
    workers live for the whole run and the parent hands out one measurement at a time, round-robin over the
    configurations in every repetition (the starting one rotates), so a change of machine load hits all alike.
  * Warm-up (the first training step and the first sampling loop: graph compilation on compiled paths) is
    timed and reported on its own, never mixed into a throughput.
  * Sampling throughput is images/s of the full T=200 DDPM loop. With ``--sample-steps k`` < T each loop is
    the same sampler over a T=k schedule (the same shapes, the same work per step; the tutorial's own
    ``p_sample_loop`` with its global ``timesteps`` set to k) and its time is scaled by T/k; the output says so.
  * The machine may be shared: before each measurement the parent waits (up to ``--quiet-wait`` s) until other
    processes use less than a quarter of a core, and it records, for every measurement, the CPU that processes
    other than the bench used meanwhile ("foreign" cores, from /proc/stat) and the 1-minute load average.
  * Data-parallel scaling (``--workers 1,2``, parity/bench/scaling.py): weak scaling of each framework's fast
    path in ``--configs``, launched by ``ddpm_core.runtime.launch``. Nothing here asserts a speed.

Modules: ``workloads`` (what a CPU worker times), ``load`` (/proc readings), ``orchestrate`` (the workers, the
figures, the goals), ``scaling`` (data parallelism), ``markdown``, ``cuda`` / ``cuda_run`` (the GPU bench),
``sweep`` (its batch sweep and issue 24's goals), ``profile`` (its top kernels), ``fastcheck`` (parity of the
GPU fast paths), ``cli`` (options and the run).
"""
from parity.bench.cli import build_parser, main, parse
from parity.bench.markdown import dp_markdown, markdown
from parity.bench.scaling import data_parallel_scaling, dp_plan, scaling_efficiency, summarise_scaling

__all__ = ["build_parser", "data_parallel_scaling", "dp_markdown", "dp_plan", "main", "markdown", "parse",
           "scaling_efficiency", "summarise_scaling"]
