"""ort_message: the gist of onnxruntime's exception text on one line."""

from llcompile.util.ort_errors import ort_message


def test_a_kernel_failure_inside_a_training_step_keeps_the_node_and_the_kernels_message():
    """The text ORT 1.19.2 raised for ResNet-D before AveragePool was decomposed."""
    raised = RuntimeError(
        "/onnxruntime_src/orttraining/orttraining/training_api/module.cc:632 onnxruntime::common::Status "
        "onnxruntime::training::api::Module::TrainStep(const std::vector<OrtValue>&, std::vector<OrtValue>&) "
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Sum node. "
        "Name:'AccumulateGrad_/layers/layers.1/Relu_output_0_grad' Status Message: /onnxruntime_src/onnxruntime/"
        "core/providers/cpu/math/element_wise_ops.h:666 onnxruntime::Broadcaster::Broadcaster(gsl::span<const "
        "long int>, gsl::span<const long int>) largest <= 1 was false. Can broadcast 0 by 0 or 1. 8 is invalid.\n")
    assert ort_message(raised) == ("Sum node 'AccumulateGrad_/layers/layers.1/Relu_output_0_grad': "
                                   "Can broadcast 0 by 0 or 1. 8 is invalid.")


def test_a_status_without_a_failed_check_keeps_the_status_message():
    raised = RuntimeError(
        "/onnxruntime_src/orttraining/orttraining/training_api/module.cc:632 onnxruntime::common::Status "
        "onnxruntime::training::api::Module::TrainStep(const std::vector<OrtValue>&, std::vector<OrtValue>&) "
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: input for the following "
        "indices\n index: 3 Got: 15 Expected: 16\n Please fix either the inputs/outputs or the model.")
    assert ort_message(raised) == ("Got invalid dimensions for input: input for the following indices index: 3 "
                                   "Got: 15 Expected: 16 Please fix either the inputs/outputs or the model.")


def test_an_empty_message_names_the_exception_type():
    assert ort_message(RuntimeError("")) == "RuntimeError"
