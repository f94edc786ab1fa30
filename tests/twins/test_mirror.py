"""The twins mirror each other file for file and name for name (in the spirit of transformers'
``check_copies``): every module of ``ddpm_torch`` has a namesake in ``ddpm_ms`` whose top-level names,
classes, methods and parameter names match in order, after mapping the framework's own words
(``forward``/``construct``, ``module``/``cell``). Each difference the frameworks force is listed once in
``ALLOWED`` with its reason; anything else is drift and fails, and so does an allowance that no longer
matches anything (the drift it excused is gone: delete it).
"""
from __future__ import annotations

import ast
import difflib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TWINS = ("ddpm_torch", "ddpm_ms")
TOKENS = {"construct": "forward", "cell": "module", "Cell": "Module"}
"""MindSpore's word -> PyTorch's word for the same thing."""

ALLOWED: dict[tuple[str, str], str] = {
    ("adapter.py", "+def snapshot(x)"):
        "Tensor.asnumpy() can alias a Parameter's memory; PyTorch's .numpy().copy() after detach cannot alias",
    ("adapter.py", "-def Adapter.__init__(device,dtype)"):
        "a PyTorch model lives on a device and in a dtype chosen per object (the float64 anchor side); "
        "MindSpore's device is the process context and its CPU Conv2D has no float64",
    ("adapter.py", "+def Adapter.torch_names(model)"):
        "MindSpore's parameter names differ from PyTorch's (gamma/beta); PyTorch's are the names already",
    ("adapter.py", "-def load_model(state,cfg,device)"): "the device: see Adapter.__init__",
    ("adapter.py", "+def Adapter.__init__(composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("adapter.py", "+def load_model(state,cfg,composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("layers.py", "+const GELU_TANH_COEF"): "composed_ops: MindSpore's CPU GELU and GroupNorm kernels are slow (5-10x "
                                         "PyTorch's, docs/performance.md); PyTorch's are fast, so it has no composed path",
    ("layers.py", "+const GELU_CUBIC"): "composed_ops, see GELU_TANH_COEF",
    ("layers.py", "+class ComposedGELU"): "composed_ops, see GELU_TANH_COEF",
    ("layers.py", "+def ComposedGELU.forward(x)"): "composed_ops, see GELU_TANH_COEF",
    ("layers.py", "+class ComposedGroupNorm"): "composed_ops, see GELU_TANH_COEF",
    ("layers.py", "+def ComposedGroupNorm.forward(x)"): "composed_ops, see GELU_TANH_COEF",
    ("layers.py", "+def compose_ops(model)"): "composed_ops, see GELU_TANH_COEF",
    ("unet.py", "-def Unet.__init__(dim,init_dim,out_dim,dim_mults,channels,with_time_emb,convnext_mult,use_convnext,"
                "resnet_block_groups)"): "MindSpore only: composed_ops (see layers.py)",
    ("unet.py", "+def Unet.__init__(dim,init_dim,out_dim,dim_mults,channels,with_time_emb,convnext_mult,use_convnext,"
                "resnet_block_groups,composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("unet.py", "-def Unet.from_config(cfg)"): "MindSpore only: composed_ops (see layers.py)",
    ("unet.py", "+def Unet.from_config(cfg,composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("sample.py", "-def make_denoiser(state,cfg,diffusion_config,sampler,steps,eta,compile,progress,device)"):
        "MindSpore only: composed_ops (see layers.py)",
    ("sample.py", "+def make_denoiser(state,cfg,diffusion_config,sampler,steps,eta,compile,progress,device,"
                  "composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("train.py", "-def Trainer.__init__(unet_config,diffusion_config,lrs,seed,weights,compile,world,device,precision,"
                 "deterministic)"): "MindSpore only: composed_ops (see layers.py)",
    ("train.py", "+def Trainer.__init__(unet_config,diffusion_config,lrs,seed,weights,compile,world,device,precision,"
                 "deterministic,composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("train.py", "-def train_steps(unet_config,diffusion_config,weights,x_starts,ts,noises,lrs,compile,world,device)"):
        "MindSpore only: composed_ops (see layers.py)",
    ("train.py", "+def train_steps(unet_config,diffusion_config,weights,x_starts,ts,noises,lrs,compile,world,device,"
                 "composed_ops)"): "MindSpore only: composed_ops (see layers.py)",
    ("device.py", "-def on_cpu(obj)"):
        "torch.save records each tensor's device, so a CUDA checkpoint is copied to the CPU first; MindSpore's "
        "save_checkpoint writes host arrays",
    ("data.py", "+const _DECODE_FAILED"): "MindSpore's dataset pipeline reports decode errors by message text",
    ("data.py", "-def load_image(path)"): "PyTorch's pipeline decodes with PIL in Python; MindSpore's in its own ops",
    ("data.py", "+class _Indices"): "MindSpore's GeneratorDataset takes a sampler object; PyTorch's DataLoader an iterable",
    ("data.py", "+def _Indices.__init__(flat)"): "see _Indices",
    ("data.py", "+def _Indices.__iter__()"): "see _Indices",
    ("data.py", "+def TrainingData._dataset(sampler)"): "MindSpore rebuilds its pipeline per epoch from a sampler",
    ("diffusion.py", "+const FLOAT_DTYPES"): "MindSpore has no dtype.is_floating_point",
    ("diffusion.py", "+const _SMOOTH_L1"): "MindSpore's SmoothL1Loss is a Cell, built once; PyTorch's is a function",
    ("diffusion.py", "-def GaussianDiffusion.__init__(config,device)"): "the device: see adapter.py",
    ("diffusion.py", "+def GaussianDiffusion.__init__(config)"): "the device: see adapter.py",
    ("diffusion.py", "-def capture_graph(run,device,warmup,warmup_calls)"):
        "CUDA graphs (record once, replay): a PyTorch-on-CUDA launch path; MindSpore's compiled graphs are ms.jit",
    ("diffusion.py", "-def GaussianDiffusion.ddpm_graph(model,shape,dtype,step)"):
        "the DDPM loop as one CUDA graph (see capture_graph); MindSpore compiles the step with ms.jit",
    ("diffusion.py", "-def GaussianDiffusion.sample_timesteps(batch,generator)"):
        "PyTorch draws from a Generator object; MindSpore's random ops take a seed",
    ("diffusion.py", "+def GaussianDiffusion.sample_timesteps(batch,seed)"): "see the PyTorch line",
    ("distributed.py", "-def data_parallel(model,world)"):
        "PyTorch averages gradients by wrapping the model (DistributedDataParallel)",
    ("distributed.py", "+def grad_reducer(parameters,world)"):
        "MindSpore averages them with a DistributedGradReducer applied to the gradients",
    ("optim.py", "+const FUSED_SPARSE_ADAM_NOTICE"):
        "MindSpore's nn.Adam builds the deprecated ops.FusedSparseAdam and logs it on every run; PyTorch logs nothing",
    ("optim.py", "+def without_notice(text)"): "see FUSED_SPARSE_ADAM_NOTICE",
    ("optim.py", "-class MindSporeAdam"): "MindSpore's Adam rule (eps on the uncorrected sqrt(v)) written for PyTorch; "
                                          "MindSpore has it as nn.Adam",
    ("optim.py", "-def MindSporeAdam.__init__(params,lr,betas,eps,foreach)"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.current_lr()"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.state_dict()"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.load_state_dict(state_dict)"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.step(closure)"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.betas(group)"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.advance()"): "see MindSporeAdam: the host's float32 scalars of a step",
    ("optim.py", "-def MindSporeAdam.moments(params)"): "see MindSporeAdam",
    ("optim.py", "-def MindSporeAdam.update(group,lr_t)"):
        "see MindSporeAdam: the element-wise rule, apart so that a CUDA graph can record it",
    ("optim.py", "-const FOREACH"): "MindSporeAdam's foreach-or-loop choice per device (see MindSporeAdam)",
    ("optim.py", "-const CHANNELS_LAST"): "PyTorch's fast path is a memory format, chosen per device",
    ("optim.py", "-def graphed_train_step(model,diffusion,optimizer,loss_type,warmup_steps)"):
        "the training step as one CUDA graph (see diffusion.py capture_graph); MindSpore's is one ms.jit graph",
    ("optim.py", "-def make_optimizer(model,lr,rule)"): "PyTorch can also run torch.optim.Adam's rule (rule='torch')",
    ("optim.py", "+def make_optimizer(model,lr)"): "see the PyTorch line",
    ("optim.py", "-def unscaled_finite(model,scaled_loss,loss_scale)"):
        "PyTorch scales the loss it calls backward on and unscales each .grad in place",
    ("optim.py", "+def scaled(forward,loss_scale)"):
        "MindSpore differentiates a function: it must return loss x scale (and the loss as aux)",
    ("amp.py", "+class UnsupportedPolicy"):
        "MindSpore's amp O1 (mindspore.rewrite) refuses the tutorial's network; torch.autocast refuses nothing",
    ("optim.py", "+const JIT_LEVEL"): "the ms.jit level of the compiled step; PyTorch's step is eager",
    ("optim.py", "-def make_train_step(model,diffusion,optimizer,loss_type,channels_last,world,loss_scale,cuda_graph)"):
        "PyTorch's fast paths are a memory format per device and, on CUDA, the step as one CUDA graph",
    ("optim.py", "+def make_train_step(model,diffusion,optimizer,loss_type,compiled,world,loss_scale)"):
        "MindSpore's fast path is the step compiled as one ms.jit graph",
    ("train.py", "-def compile_model(model,compile)"): "--compile on: PyTorch compiles the model (torch.compile)",
    ("train.py", "+def compiles_step(compile)"): "--compile auto/on: MindSpore compiles the whole training step",
    ("train.py", "+const META_KEY"): "MindSpore checkpoints hold metadata as a string entry; torch.save holds a dict",
    ("train.py", "+def Trainer._saved()"): "MindSpore saves the optimizer's parameters (model, moments, step) as one list",
    ("unet.py", "+def Unet.use_structural_names()"):
        "MindSpore names parameters when the cell is built; PyTorch derives names from attributes",
}


def _params(fn: ast.FunctionDef) -> str:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
    names += (["*" + a.vararg.arg] if a.vararg else []) + [x.arg for x in a.kwonlyargs]
    names += ["**" + a.kwarg.arg] if a.kwarg else []
    return ",".join(names)


def outline(path: pathlib.Path) -> list[str]:
    """The module's top-level constants, functions (with parameter names), classes and their methods, in order,
    MindSpore's words mapped to PyTorch's."""
    out = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            out.append(f"def {node.name}({_params(node)})")
        elif isinstance(node, ast.ClassDef):
            out.append(f"class {node.name}")
            out += [f"def {node.name}.{f.name}({_params(f)})" for f in node.body if isinstance(f, ast.FunctionDef)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out += [f"const {t.id}" for t in targets if isinstance(t, ast.Name)]
    pattern = re.compile(r"\b(" + "|".join(TOKENS) + r")\b")
    return [pattern.sub(lambda m: TOKENS[m.group(1)], line) for line in out]


def drift(name: str) -> list[str]:
    """Lines of the outline diff (``-`` PyTorch only, ``+`` MindSpore only) for one mirrored file."""
    a, b = (outline(ROOT / twin / name) for twin in TWINS)
    return [line for line in difflib.unified_diff(a, b, n=0, lineterm="") if line[:1] in "+-"
            and not line.startswith(("---", "+++"))]


MODULES = sorted(p.name for p in (ROOT / TWINS[0]).glob("*.py"))


def test_the_twins_have_the_same_modules():
    assert MODULES == sorted(p.name for p in (ROOT / TWINS[1]).glob("*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_mirrored_module_has_no_unexplained_drift(name):
    unexplained = [line for line in drift(name) if (name, line) not in ALLOWED]
    assert not unexplained, (f"{name}: the twins drifted apart (- only in {TWINS[0]}, + only in {TWINS[1]}); "
                             f"mirror the change, or list it in ALLOWED with its reason:\n" + "\n".join(unexplained))


def test_every_allowance_still_excuses_something():
    found = {(name, line) for name in MODULES for line in drift(name)}
    stale = sorted(key for key in ALLOWED if key not in found)
    assert not stale, f"these allowances excuse nothing any more; delete them: {stale}"


def test_the_check_sees_a_renamed_parameter(tmp_path):
    """Planted drift: one twin's parameter renamed shows up as a difference."""
    src = (ROOT / TWINS[1] / "diffusion.py").read_text(encoding="utf-8")
    planted = src.replace("def q_sample(self, x_start", "def q_sample(self, x0", 1)
    assert planted != src
    (tmp_path / "diffusion.py").write_text(planted, encoding="utf-8")
    before, after = outline(ROOT / TWINS[1] / "diffusion.py"), outline(tmp_path / "diffusion.py")
    assert [line for line in after if line not in before] == [
        next(line for line in after if line.startswith("def GaussianDiffusion.q_sample("))]
