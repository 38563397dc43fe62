"""The zoo's ViT, MLP-Mixer and ConvNeXt (tiny variants) trained by every strategy on both backends:
the loss falls and the two backends compute the same losses."""

import pytest

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.train import TrainConfig, train
from tests.fixtures.token_models import export_tiny

STRATEGIES = {
    "bp": {},
    "dbl": {"blocks": 2},
    "dbl-augmented": {"blocks": 2, "aux_head": "augmented"},
    "dbl-contrast": {"blocks": 2, "aux_head": "dgl", "aux_loss": "ce+contrast"},  # on the pooled tokens
    "local-sgd": {"prefix": 1},
    "dbl-hebbian": {"prefix": 2, "blocks": 2},
}
# the ViT under every strategy in the default run; MLP-Mixer and ConvNeXt under dbl there (a full train()
# of each on both backends), under the others in the slow set
CASES = [pytest.param(name, label, id=f"{name}-{label}",
                      marks=[pytest.mark.slow] * (name != "vit" and label != "dbl"))
         for name in ("vit", "mixer", "convnext") for label in STRATEGIES]


def _run(tmp_path, name: str, label: str, backend: str, **config) -> list[float]:
    model = tmp_path / f"{name}.onnx"
    if not model.exists():
        export_tiny(name, model)
    strategy = label.removesuffix("-augmented").removesuffix("-contrast")
    program = llcompile.transform(model, strategy, **STRATEGIES[label]).save(tmp_path / f"{label}-{backend}")
    settings = dict(data="synthetic:256", epochs=3, batch_size=64, lr=2e-3, seed=0,
                    optimizer=OptimizerConfig(name="adamw"), backend=backend) | config
    result = train(program, TrainConfig(**settings), program / "run", show_progress=False)
    return [record["train_loss"] for record in result.history]


@pytest.mark.parametrize("name, label", CASES)
def test_every_strategy_trains_on_both_backends_alike(tmp_path, name, label):
    torch_losses = _run(tmp_path, name, label, "torch")
    ort_losses = _run(tmp_path, name, label, "ort")
    assert torch_losses[-1] < torch_losses[0]
    assert ort_losses == pytest.approx(torch_losses, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("label", ["bp", "dbl", "local-sgd"])
def test_the_zoo_vit_trains_on_both_backends_alike(zoo_file, tmp_path, label):
    """The full-size zoo ViT (1.8 M parameters), a few steps on 32x32 synthetic data."""
    program = llcompile.transform(zoo_file("vit"), label, **STRATEGIES[label]).save(tmp_path / label)
    losses = {}
    for backend in ("torch", "ort"):
        config = TrainConfig(data="synthetic:128", epochs=3, batch_size=32, lr=1e-3, seed=0, backend=backend,
                             optimizer=OptimizerConfig(name="adamw"), warmup_epochs=1)
        result = train(program, config, tmp_path / f"run-{backend}", show_progress=False)
        losses[backend] = [record["train_loss"] for record in result.history]
    assert losses["torch"][-1] < losses["torch"][0]
    assert losses["ort"] == pytest.approx(losses["torch"], rel=1e-3)
