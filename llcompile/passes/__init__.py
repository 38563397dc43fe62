"""Graph passes. Each is an onnx_ir pass: ``pass_(model) -> PassResult(model, modified)``.

Strategy passes (partition, aux heads, losses, the Hebbian prefix) live here and write the training
plan into the model. The front end's canonicalisation passes (``llcompile.frontend.canonical``),
which make any imported model look the same to the compiler, are exported here too, so a pipeline
of one's own finds every pass in one place. ``run_passes(passes, model)`` runs them as onnx_ir's
``PassManager`` does, but raises a pass's LLCompileError itself instead of a PassError around it.
"""

from llcompile.frontend.pass_pipeline import LLCompilePass, run_passes
from llcompile.passes.aux_heads import AuxHeadsPass
from llcompile.frontend.canonical.training_mode import TrainingModePass
from llcompile.frontend.canonical.dynamic_batch import DynamicBatchPass
from llcompile.frontend.canonical.flatten_view import FlattenViewPass
from llcompile.frontend.canonical.fold_constants import FoldConstantsPass
from llcompile.passes.hebbian import HebbianPass
from llcompile.passes.model_loss import ModelLossPass
from llcompile.passes.partition import PartitionPass

__all__ = ["AuxHeadsPass", "TrainingModePass", "DynamicBatchPass", "FlattenViewPass", "FoldConstantsPass",
           "HebbianPass", "LLCompilePass", "ModelLossPass", "PartitionPass", "run_passes"]
