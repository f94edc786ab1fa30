"""The twins' compiled sampling path (``compiled=True``): bit-identical to the default path, and never
stale when the weights change after a graph was compiled."""
import numpy as np

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.weights.converter import torch_to_ms
from tests.host import available, needs

if available("torch") and available("mindspore"):
    import torch
    from mindspore import Tensor

    import ddpm_ms
    import ddpm_torch

pytestmark = needs("torch", "mindspore")

TINY = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
SHAPE = (2, 1, 8, 8)
SHORT = DiffusionConfig(timesteps=4)


def _set(model, seed, how):
    """Load PyTorch's default init under ``seed`` (converted) with ``Parameter.set_data`` or ``copy_``."""
    torch.manual_seed(seed)
    state = {k: v.numpy() for k, v in ddpm_torch.Unet.from_config(TINY).state_dict().items()}
    params = {p.name: p for p in model.get_parameters()}
    for name, value in torch_to_ms(state, TINY).items():
        getattr(params[name], how)(Tensor(np.array(value)))


def test_compiled_sampling_is_bit_identical_and_follows_weight_changes():
    """MindSpore 2.10 graphs keep a replaced parameter storage (``set_data``): the twin's cache must
    recompile then, and must keep reading in-place updates (``copy_``) without a new graph."""
    rng = np.random.default_rng(0)
    img, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal((4, *SHAPE)).astype(np.float32)
    m = ddpm_ms.Unet.from_config(TINY)
    m.set_train(False)
    d = ddpm_ms.GaussianDiffusion(SHORT)
    graphs = []
    for seed, how in ((0, "set_data"), (1, "set_data"), (2, "copy_")):
        _set(m, seed, how)
        compiled = np.stack(d.p_sample_loop(m, SHAPE, img=img, noise=noise, compiled=True))
        eager = np.stack(d.p_sample_loop(m, SHAPE, img=img, noise=noise))
        np.testing.assert_array_equal(compiled, eager, err_msg=f"compiled != eager after {how} (seed {seed})")
        graphs.append(d.compiled("ddpm", m))
    assert graphs[0] is not graphs[1], "replaced storage must get a new graph"
    assert graphs[1] is graphs[2], "an in-place update must not need a new graph"
    t = ddpm_torch.Unet.from_config(TINY).eval()
    dt = ddpm_torch.GaussianDiffusion(SHORT)
    np.testing.assert_array_equal(np.stack(dt.p_sample_loop(t, SHAPE, img=img, noise=noise, compiled=True)),
                                  np.stack(dt.p_sample_loop(t, SHAPE, img=img, noise=noise)))
